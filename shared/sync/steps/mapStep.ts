import { mapPartition } from '../../reader/mapPartition';
import type { StepKind } from '../stepRunner';

/** Reads one partition once and routes each row to its shard (reader/mapPartition). It waits for nothing. */
export const mapStep: StepKind<undefined> = {
  kind: 'map',
  prepare: async () => ({ kind: 'ready', inputs: undefined }),
  work: (deps, run, index, owner, _inputs, signal) => mapPartition(deps, run, index, owner, signal),
};
