import { BRAZE_MAX_OBJECTS_PER_REQUEST } from '../braze/constants';
import { BrazeAuthError, BrazeRetryableError } from '../errors';
import type { SegmentRefresh } from '../ci/exportRefresh';
import { partitionList } from './exportRows';
import { describeIdentifier, type BrazeAttributesObject, type BrazeIdentifier } from '../mapping/brazeUser';
import { decodeBatchMessage, encodeMessage, type BrazeBatchMessage, type PendingUser } from '../queue/messages';
import { runFolder, writeRejectsPart, type RejectLine } from '../runs/rejectsReport';
import { emptyOutcome, type BatchOutcome } from '../runs/runLedger';
import { isTerminal, type RunRecord } from '../runs/runRecord';
import { writeUndelivered } from '../state/deliveredState';
import type { ConnectorDeps } from './deps';
import { parkBatch } from './parkedBatches';
import { requestFinalizeIfComplete } from './finalizeRun';

/** After this many hand-backs (minutes to an hour of Braze trouble), the batch is failed and parked for a resume. */
export const MAX_DEFERRALS = 8;
const MAX_DEFERRAL_DELAY_MS = 10 * 60_000;
const IDENTIFIER_KEYS = new Set(['external_id', 'user_alias', 'braze_id', 'email', 'phone', '_update_existing_only']);

export type DeliveryResult = { kind: 'done' | 'duplicate' | 'parked' | 'deferred' | 'dropped'; outcome?: BatchOutcome };

type UserResult = { kind: 'delivered' } | { kind: 'rejected'; reason: string } | { kind: 'unsent' };

/**
 * Sends one queue message's users to Braze and records what became of each. Idempotent: Braze
 * attribute updates can be applied twice, and the run counts a batch once.
 */
export async function deliverBatch(deps: ConnectorDeps, payload: unknown, delivery: { dequeueCount?: number } = {}): Promise<DeliveryResult> {
  let message = decodeBatchMessage(payload);
  // A message on its first delivery has no history to look up (outcome, handoff, earlier parts):
  // that saves several storage calls per batch. Replays, and resumed batches, check everything.
  const firstDelivery = delivery.dequeueCount === 1 && !message.resumed;
  const run = await deps.ledger.get(message.runId);
  if (!run) {
    deps.log.warn(`batch ${message.batchId}: run ${message.runId} does not exist; dropped`);
    return { kind: 'dropped' };
  }
  const context: RecordContext = { firstDelivery };
  if (!firstDelivery && (await deps.ledger.isBatchSettled(message.runId, message.batchId))) return { kind: 'duplicate' };
  const sources = sourceNames(run);
  // A replay after a crash mid-handoff: finish the handoff, and leave the handed-off profiles to their batch.
  const earlier = firstDelivery ? undefined : await readHandoff(deps, message);
  if (earlier) {
    await performHandoff(deps, earlier, sources);
    const handedOff = new Set(earlier.child.users.map((u) => u.h));
    message = { ...message, users: message.users.filter((u) => !handedOff.has(u.h)) };
    if (message.users.length === 0) return record(deps, message.runId, message.batchId, newOutcome(), false, 'done', context);
  }
  if (run.status === 'halted') return parkWhole(deps, message, sources, run.error ?? 'run halted');
  if (isTerminal(run.status) && run.status !== 'completed') {
    return recordFailed(deps, message, sources, `run ${run.status}${run.supersededBy ? ` by ${run.supersededBy}` : ''}`);
  }

  const deadlineMs = deps.clock.now() + deps.settings.senderBudgetMs;
  const results: UserResult[] = message.users.map(() => ({ kind: 'unsent' }));
  let authError: BrazeAuthError | undefined;
  let retryError: BrazeRetryableError | undefined;
  let requests = 0;

  const sendChunk = async (indexes: number[]): Promise<void> => {
    if (authError || retryError) return;
    const objects = indexes.map((i) => message.users[i].o as BrazeAttributesObject);
    try {
      requests += 1;
      const outcome = await deps.braze.track(objects, deadlineMs);
      if (outcome.kind === 'accepted') {
        const refused = new Map(outcome.rowErrors.map((e) => [e.index, e.type]));
        indexes.forEach((userIndex, position) => {
          const type = refused.get(position);
          results[userIndex] = type === undefined ? { kind: 'delivered' } : { kind: 'rejected', reason: `Braze: ${type}` };
        });
        if (outcome.unattributedErrors.length)
          deps.log.warn(`batch ${message.batchId}: Braze reported errors without a row: ${outcome.unattributedErrors.join('; ')}`);
        return;
      }
      // A whole request refused (bad request, "Max Input Length Exceeded"): halve it until the rows Braze refuses are isolated.
      if (indexes.length > 1 && (outcome.status === 400 || outcome.status === 413 || outcome.status === 422)) {
        const half = Math.ceil(indexes.length / 2);
        await sendChunk(indexes.slice(0, half));
        await sendChunk(indexes.slice(half));
        return;
      }
      for (const userIndex of indexes) results[userIndex] = { kind: 'rejected', reason: `Braze ${outcome.status}: ${outcome.message}` };
    } catch (error) {
      if (error instanceof BrazeAuthError) authError ??= error;
      else if (error instanceof BrazeRetryableError) retryError ??= error;
      else throw error;
    }
  };

  const chunks: number[][] = [];
  for (let start = 0; start < message.users.length; start += BRAZE_MAX_OBJECTS_PER_REQUEST) {
    chunks.push(Array.from({ length: Math.min(BRAZE_MAX_OBJECTS_PER_REQUEST, message.users.length - start) }, (_, i) => start + i));
  }
  await Promise.all(chunks.map(sendChunk));

  const unsent = message.users.filter((_, i) => results[i].kind === 'unsent');
  const outcome = summarize(message, results, sources);
  outcome.brazeRequests = requests;

  if (authError) {
    deps.log.error(`run ${message.runId} halted: ${authError.message}`);
    await deps.ledger.update(message.runId, (current) =>
      isTerminal(current.status) || current.status === 'halted'
        ? undefined
        : { status: 'halted', error: `${authError!.message}. Fix BRAZE_API_KEY (users.track permission), then POST /api/runs/${message.runId}/resume.` },
    );
    // The unsent rest travels as a batch of its own, so a resume can settle it without touching what was delivered.
    if (unsent.length)
      await handOff(deps, message, { kind: 'park', child: { ...message, batchId: `${message.batchId}~p`, users: unsent }, reason: authError.message }, sources);
    return record(deps, message.runId, message.batchId, outcome, false, 'parked', context);
  }
  if (retryError && unsent.length) {
    if (message.deferrals + 1 >= MAX_DEFERRALS) {
      const reason = `Braze unavailable after ${MAX_DEFERRALS} deferrals: ${retryError.message}`;
      deps.log.error(`batch ${message.batchId} of run ${message.runId}: ${unsent.length} profiles failed; ${reason}`);
      await handOff(deps, message, { kind: 'fail', child: { ...message, batchId: `${message.batchId}~f`, users: unsent }, reason }, sources);
      return record(deps, message.runId, message.batchId, outcome, false);
    }
    const delayMs = deferralDelay(deps, retryError, message.deferrals);
    const child: BrazeBatchMessage = { ...message, batchId: `${message.batchId}~${message.deferrals + 1}`, deferrals: message.deferrals + 1, users: unsent };
    await handOff(deps, message, { kind: 'defer', child, delayMs, reason: retryError.message }, sources);
    deps.log.warn(`batch ${message.batchId}: ${unsent.length} profiles handed back for ${Math.ceil(delayMs / 1000)} s (${retryError.message})`);
    return record(deps, message.runId, message.batchId, outcome, false, 'deferred', context);
  }
  return record(deps, message.runId, message.batchId, outcome, false, 'done', context);
}

/**
 * Profiles a batch could not settle move to a child batch: sent again later (defer), parked until
 * a resume (park), or counted failed and parked (fail). The handoff is written down first, so a
 * replay of the parent after a crash finishes it instead of counting those profiles twice.
 */
interface Handoff {
  kind: 'defer' | 'park' | 'fail';
  child: BrazeBatchMessage;
  reason: string;
  delayMs?: number;
}

function handoffBlobName(runId: string, batchId: string): string {
  return `${runFolder(runId)}/handoffs/${batchId}.json`;
}

async function handOff(deps: ConnectorDeps, parent: BrazeBatchMessage, handoff: Handoff, sources: string[]): Promise<void> {
  const text = JSON.stringify({ ...handoff, child: encodeMessage(handoff.child) });
  await deps.storage.stateContainer.getBlockBlobClient(handoffBlobName(parent.runId, parent.batchId)).upload(text, Buffer.byteLength(text));
  await performHandoff(deps, handoff, sources);
}

async function readHandoff(deps: ConnectorDeps, message: BrazeBatchMessage): Promise<Handoff | undefined> {
  try {
    const text = (await deps.storage.stateContainer.getBlobClient(handoffBlobName(message.runId, message.batchId)).downloadToBuffer()).toString('utf8');
    const stored = JSON.parse(text) as Omit<Handoff, 'child'> & { child: string };
    return { ...stored, child: decodeBatchMessage(stored.child) };
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return undefined;
    throw error;
  }
}

/** Idempotent: a duplicate child message is recognised by its batch id; parking and recording overwrite. */
async function performHandoff(deps: ConnectorDeps, handoff: Handoff, sources: string[]): Promise<void> {
  const { child } = handoff;
  if (handoff.kind === 'defer') {
    await deps.storage.batchQueue.sendMessage(encodeMessage(child), { visibilityTimeout: Math.ceil((handoff.delayMs ?? 0) / 1000) });
    return;
  }
  if (await deps.ledger.isBatchSettled(child.runId, child.batchId)) return;
  if (handoff.kind === 'park') {
    await parkWhole(deps, child, sources, handoff.reason);
    return;
  }
  await parkFailed(deps, child, sources, handoff.reason);
}

function deferralDelay(deps: ConnectorDeps, error: BrazeRetryableError, deferrals: number): number {
  const serverSays = error.retryAfterMs !== undefined ? error.retryAfterMs - deps.clock.now() : 0;
  const backoff = Math.min(MAX_DEFERRAL_DELAY_MS, 5_000 * 2 ** deferrals);
  return Math.max(1_000, serverSays, error.status === 429 ? 0 : backoff);
}

function dataPoints(object: Record<string, unknown>): number {
  let n = 0;
  for (const key of Object.keys(object)) if (!IDENTIFIER_KEYS.has(key)) n += 1;
  // The e-mail is a data point when it is an attribute, not when it is the identifier.
  if ('email' in object && ('external_id' in object || 'user_alias' in object)) n += 1;
  return n;
}

type PartOutcome = BatchOutcome & { rejectLines: RejectLine[]; undelivered: string[] };

function newOutcome(): PartOutcome {
  return { ...emptyOutcome(), rejectLines: [], undelivered: [] };
}

function sourceNames(run: RunRecord): string[] {
  try {
    return partitionList(JSON.parse(run.sources) as SegmentRefresh[]).map((p) => p.partition.blobName);
  } catch {
    return [];
  }
}

function summarize(message: BrazeBatchMessage, results: UserResult[], sources: string[]): PartOutcome {
  const outcome = newOutcome();
  message.users.forEach((user, i) => {
    const result = results[i];
    if (result.kind === 'delivered') {
      outcome.usersDelivered += 1;
      outcome.rowsDelivered += user.r;
      outcome.dataPointsSent += dataPoints(user.o);
    } else if (result.kind === 'rejected') {
      outcome.usersRejected += 1;
      outcome.rowsRejectedBraze += user.r;
      const key = result.reason.replace(/\d+/g, 'N');
      outcome.rejectedByReason[key] = (outcome.rejectedByReason[key] ?? 0) + user.r;
      outcome.rejectLines.push(rejectLine(sources, user, 'rejected', result.reason));
      outcome.undelivered.push(user.h);
    }
  });
  return outcome;
}

function addUnsent(outcome: PartOutcome, users: PendingUser[], sources: string[], as: 'parked' | 'failed', reason: string): void {
  for (const user of users) {
    outcome.undelivered.push(user.h);
    if (as === 'parked') {
      outcome.usersParked += 1;
      outcome.rowsParked += user.r;
    } else {
      outcome.usersFailed += 1;
      outcome.rowsFailed += user.r;
      outcome.rejectLines.push(rejectLine(sources, user, 'failed', reason));
    }
  }
}

/** Reject lines name the partition blob and row, and the identifier unless it is an e-mail. */
function rejectLine(sources: string[], user: PendingUser, outcome: RejectLine['outcome'], reason: string): RejectLine {
  if (user.s === 'exit')
    return { outcome, source: 'leaver (segment exit)', row: '', identifier: describeIdentifier(user.o as unknown as BrazeIdentifier), reason };
  const [partition, row] = user.s.split(':');
  return {
    outcome,
    source: sources[Number(partition)] ?? `partition ${partition}`,
    row: Number(row),
    identifier: describeIdentifier(user.o as unknown as BrazeIdentifier),
    reason,
  };
}

async function parkWhole(deps: ConnectorDeps, message: BrazeBatchMessage, sources: string[], reason: string): Promise<DeliveryResult> {
  await parkBatch(deps.storage.stateContainer, message);
  const outcome = newOutcome();
  addUnsent(outcome, message.users, sources, 'parked', reason);
  deps.log.warn(`batch ${message.batchId} of run ${message.runId} parked (${message.users.length} profiles) until resume`);
  return record(deps, message.runId, message.batchId, outcome, false, 'parked');
}

/** Counts every profile of a batch as failed with a reason (poison queue, ended run). */
function recordFailed(deps: ConnectorDeps, message: BrazeBatchMessage, sources: string[], reason: string): Promise<DeliveryResult> {
  const outcome = newOutcome();
  addUnsent(outcome, message.users, sources, 'failed', reason);
  return record(deps, message.runId, message.batchId, outcome, false);
}

/** Keeps a batch for a resume and counts its profiles as failed with the reason. */
async function parkFailed(deps: ConnectorDeps, message: BrazeBatchMessage, sources: string[], reason: string): Promise<DeliveryResult> {
  await parkBatch(deps.storage.stateContainer, message);
  return recordFailed(deps, message, sources, reason);
}

/** A batch that will not be sent any more (the poison queue): parked for a resume, counted failed. */
export async function parkFailedBatch(deps: ConnectorDeps, message: BrazeBatchMessage, reason: string): Promise<DeliveryResult> {
  const run = await deps.ledger.get(message.runId);
  if (!run) return { kind: 'dropped' };
  return parkFailed(deps, message, sourceNames(run), reason);
}

interface RecordContext {
  /** Nothing was recorded or written for this batch before: empty parts need no clean-up. */
  firstDelivery: boolean;
}

/** Records a batch's outcome: its rejects and undelivered profiles first, then the counts, then maybe the run's end. */
export async function record(
  deps: ConnectorDeps,
  runId: string,
  batchId: string,
  outcome: PartOutcome,
  skipFinalize: boolean,
  kind: DeliveryResult['kind'] = 'done',
  context?: RecordContext,
): Promise<DeliveryResult> {
  const { rejectLines, undelivered, ...counts } = outcome;
  const fresh = context?.firstDelivery ?? false;
  if (rejectLines.length || !fresh) await writeRejectsPart(deps.storage.stateContainer, runId, `batch-${batchId}`, rejectLines);
  if (undelivered.length || !fresh) await writeUndelivered(deps.storage.stateContainer, runId, batchId, undelivered);
  const { applied, run } = await deps.ledger.recordBatch(runId, batchId, counts, { firstDelivery: fresh });
  if (!applied) return { kind: 'duplicate' };
  if (!skipFinalize) await requestFinalizeIfComplete(deps, run);
  return { kind, outcome: counts };
}
