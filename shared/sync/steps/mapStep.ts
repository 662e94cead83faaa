import { mapPartition } from '../../reader/mapPartition';
import { wantsIdentityHints } from '../../state/deliveredState';
import { runStateBase } from '../stateBase';
import type { StepKind } from '../stepRunner';

/** Reads one partition once and routes each row to its shard (reader/mapPartition). It waits for nothing. */
export const mapStep: StepKind<undefined> = {
  kind: 'map',
  prepare: async () => ({ kind: 'ready', inputs: undefined }),
  work: async (deps, run, index, owner, _inputs, signal) =>
    mapPartition(deps, run, index, owner, signal, { identityHints: wantsIdentityHints(await runStateBase(deps, run)) }),
};
