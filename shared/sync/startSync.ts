import { randomBytes } from 'node:crypto';
import type { DestinationConfig } from '../config/syncConfig';
import { discoverExports, resolveRefresh, whyNoExport, type ExportRefresh } from '../ci/exportRefresh';
import { parseExportBlobName } from '../ci/layout';
import { checkColumns } from '../mapping/rowMapper';
import { ExportNotReadyError, InvalidInputError } from '../errors';
import { encodeMessage } from '../queue/messages';
import { runIdFor } from '../runs/runStore';
import { sendToQueue } from '../storage/queueSend';
import { writeSources } from '../runs/runSources';
import { runCountsSchema, type RunRecord, type RunTrigger } from '../runs/runRecord';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { ensureReady } from './connector';

export interface SyncRequest {
  trigger: RunTrigger;
  /** Only this destination; all configured ones when absent. */
  destination?: string;
  /** Only these segments (tables) of the destination. */
  segments?: string[];
  /** Send every profile in full and rebuild the delivered state, even if this refresh was synced. */
  force?: boolean;
  /** Preview what a run would send, sending nothing (also per destination: `dryRun` in the mapping config). */
  dryRun?: boolean;
  /** Compare Braze's segment exports with the refresh and repair what drifted, instead of diffing against the delivered state. */
  reconcile?: boolean;
}

export interface SyncRequestOutcome {
  runs: { runId: string; destination: string; instance: string; refresh: string; created: boolean; status: string }[];
  /** Destinations that could not start, with the reason (a missing partition, a bad model.json). */
  problems: { destination: string; instance?: string; error: string; retryable: boolean }[];
}

function selectDestinations(deps: ConnectorDeps, request: SyncRequest): DestinationConfig[] {
  let destinations = deps.config.destinations;
  if (request.destination) {
    destinations = destinations.filter((d) => d.name === request.destination);
    if (destinations.length === 0) {
      throw new InvalidInputError(
        `destination "${request.destination}" is not configured (configured: ${deps.config.destinations.map((d) => d.name).join(', ')})`,
      );
    }
  }
  if (request.segments?.length) {
    const wanted = new Set(request.segments);
    destinations = destinations.map((d) => {
      const unknown = request.segments!.filter((s) => !d.segments.some((c) => c.table === s));
      if (unknown.length) throw new InvalidInputError(`segments ${unknown.join(', ')} are not configured for destination "${d.name}"`);
      return { ...d, segments: d.segments.filter((s) => wanted.has(s.table)) };
    });
  }
  return destinations;
}

/**
 * Resolves the refreshes to sync and creates one run per refresh, idempotently: the run id
 * derives from the refresh, so a timer tick, an HTTP call and a blob event for the same refresh
 * meet on the same record and only the first one enqueues it.
 */
export async function requestSync(deps: ConnectorDeps, request: SyncRequest): Promise<SyncRequestOutcome> {
  return recorded(deps, request.trigger, await syncRefreshes(deps, request));
}

async function syncRefreshes(deps: ConnectorDeps, request: SyncRequest): Promise<SyncRequestOutcome> {
  await ensureReady(deps);
  const outcome: SyncRequestOutcome = { runs: [], problems: [] };
  for (const destination of selectDestinations(deps, request)) {
    const locations = await discoverExports(deps.storage.exportContainer, destination);
    if (locations.length === 0) {
      outcome.problems.push({ destination: destination.name, error: await whyNoExport(deps.storage.exportContainer, destination), retryable: true });
      continue;
    }
    for (const location of locations) {
      try {
        outcome.runs.push(await startRefresh(deps, await resolveRefresh(deps.storage.exportContainer, location, destination), destination, request));
      } catch (error) {
        if (!(error instanceof InvalidInputError) && !(error instanceof ExportNotReadyError)) throw error;
        // The trigger's function reports the problems it gets back: logged here too, each would show twice.
        outcome.problems.push({ destination: destination.name, instance: location.instance, error: error.message, retryable: error.retryable });
      }
    }
  }
  return outcome;
}

/** A blob landed in the export container: sync the refresh it belongs to, if it is complete. */
export async function requestSyncForBlob(deps: ConnectorDeps, blobName: string): Promise<SyncRequestOutcome> {
  const outcome = await syncBlob(deps, blobName);
  // A record when the blob started or met a run, when no wait can mend its problem, or when it is
  // the model.json that should have started one: not one per partition of an export still landing.
  const worth = outcome.runs.length > 0 || outcome.problems.some((p) => !p.retryable) || (outcome.problems.length > 0 && blobName.endsWith('/model.json'));
  return worth ? recorded(deps, 'blob', outcome) : outcome;
}

/** A problem as one line: where, and why no run started. */
export function describeProblem(problem: SyncRequestOutcome['problems'][number]): string {
  return `${problem.instance ? `${problem.instance}/` : ''}${problem.destination}: ${problem.error}`;
}

/** Each trigger's outcome as a record: why a tick started nothing is then one query away. */
function recorded(deps: ConnectorDeps, trigger: RunTrigger, outcome: SyncRequestOutcome): SyncRequestOutcome {
  deps.log.record({
    connectorEvent: 'SyncRequested',
    trigger,
    // Flat, as every record is: ids joined by commas, reasons by line breaks.
    runIds: outcome.runs.map((r) => r.runId).join(','),
    runsCreated: outcome.runs.filter((r) => r.created).length,
    problems: outcome.problems.length,
    problemReasons: outcome.problems.map(describeProblem).join('\n'),
  });
  return outcome;
}

async function syncBlob(deps: ConnectorDeps, blobName: string): Promise<SyncRequestOutcome> {
  const location = parseExportBlobName(blobName);
  if (!location) return { runs: [], problems: [] };
  const destination = deps.config.destinations.find((d) => d.name === location.destination && (!d.instance || d.instance === location.instance));
  if (!destination) {
    // Another destination's export is no problem; one whose `instance` filter leaves it out is what a person looks for.
    const filtered = deps.config.destinations.find((d) => d.name === location.destination);
    if (!filtered) return { runs: [], problems: [] };
    return {
      runs: [],
      problems: [
        {
          destination: filtered.name,
          instance: location.instance,
          error: `the export is of instance ${location.instance}; destination "${filtered.name}" takes only instance ${filtered.instance} (its "instance" in the config)`,
          retryable: false,
        },
      ],
    };
  }
  if (location.partition && !destination.segments.some((s) => s.table.toLowerCase() === location.partition!.table.toLowerCase())) {
    return { runs: [], problems: [] };
  }
  await ensureReady(deps);
  try {
    const refresh = await resolveRefresh(deps.storage.exportContainer, location, { ...destination, instance: location.instance });
    // A part file newer than model.json's refresh means CI is still writing: model.json's own event will start it.
    if (location.partition && !refresh.segments.some((s) => s.partitions.some((p) => p.blobName === blobName))) {
      return {
        runs: [],
        problems: [
          {
            destination: destination.name,
            instance: location.instance,
            error: `${blobName} is not (yet) part of model.json's refresh; waiting for model.json`,
            retryable: true,
          },
        ],
      };
    }
    return {
      runs: [await startRefresh(deps, refresh, destination, { trigger: 'blob' })],
      problems: [],
    };
  } catch (error) {
    // The function reports the problems it gets back (once).
    if (error instanceof ExportNotReadyError) {
      return { runs: [], problems: [{ destination: destination.name, instance: location.instance, error: error.message, retryable: true }] };
    }
    // A bad model.json or a config that does not fit it: retrying the event cannot help; say why once.
    if (error instanceof InvalidInputError) {
      return { runs: [], problems: [{ destination: destination.name, instance: location.instance, error: error.message, retryable: false }] };
    }
    throw error;
  }
}

/** Checks the config against the refresh's columns, then creates (or meets) its run. */
async function startRefresh(
  deps: ConnectorDeps,
  refresh: ExportRefresh,
  destination: DestinationConfig,
  request: Pick<SyncRequest, 'trigger' | 'force' | 'dryRun' | 'reconcile'>,
): Promise<SyncRequestOutcome['runs'][number]> {
  for (const segment of refresh.segments) checkColumns(destination, segment.table, segment.attributes);
  const { created, run } = await createRun(deps, refresh, { ...request, dryRun: request.dryRun || destination.dryRun });
  if (created) for (const note of refresh.notes) deps.log.warn(`run ${run.runId}: ${note}`);
  return { runId: run.runId, destination: destination.name, instance: refresh.instance, refresh: refresh.label, created, status: run.status };
}

async function createRun(
  deps: ConnectorDeps,
  refresh: ExportRefresh,
  request: Pick<SyncRequest, 'trigger' | 'force' | 'dryRun' | 'reconcile'>,
): Promise<{ created: boolean; run: RunRecord }> {
  const force = request.force ?? false;
  const dryRun = request.dryRun ?? false;
  const reconcile = request.reconcile ?? false;
  const runId = runIdFor(refresh.modelJsonPath, refresh.refreshKey, force, randomBytes(4).toString('hex'), dryRun, reconcile);
  const now = new Date(deps.clock.now()).toISOString();
  const sourcesBlob = await writeSources(deps, runId, refresh.segments);
  const created = await deps.runs.create({
    runId,
    status: 'queued',
    trigger: request.trigger,
    destination: refresh.destination,
    instance: refresh.instance,
    modelJsonPath: refresh.modelJsonPath,
    refreshKey: refresh.refreshKey,
    refreshLabel: refresh.label,
    refreshTime: refresh.refreshTime,
    generation: 0,
    force,
    dryRun,
    reconcile,
    enqueueDone: false,
    createdAt: now,
    updatedAt: now,
    rejectedByReason: '{}',
    inputRejectedByReason: '{}',
    sourcesBlob,
    rowsReadSoFar: 0,
    shards: 0,
    phasesSent: 0,
    stateFallback: false,
    staged: false,
    approved: false,
    ...runCountsSchema.parse({}),
  });
  // A run still queued may have lost its message to a crash right after the insert: send it again;
  // the enqueuer's lease makes a second copy harmless.
  if (created.created || created.run.status === 'queued') {
    await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'startRun', runId }));
    if (!created.created) deps.log.info(`run ${runId} is still queued: its start was sent again (${request.trigger})`);
    else
      deps.log.info(
        `run ${runId} queued: ${refresh.instance}/${refresh.destination} refresh ${refresh.label} (${request.trigger}${force ? ', force' : ''}${reconcile ? ', reconcile' : ''}${dryRun ? ', dry run' : ''})`,
      );
    if (created.created) {
      deps.log.record({
        connectorEvent: 'RunQueued',
        runId,
        destination: refresh.destination,
        trigger: request.trigger,
        refresh: refresh.label,
        force,
        ...(reconcile ? { reconcile } : {}),
      });
    }
  } else {
    deps.log.info(
      `run ${runId} already exists for ${refresh.instance}/${refresh.destination} refresh ${refresh.label} (status ${created.run.status}); not started again`,
    );
  }
  return created;
}
