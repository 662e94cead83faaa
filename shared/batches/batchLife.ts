import { createHash } from 'node:crypto';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { decodeBatchMessage, encodeMessage, type BrazeBatchMessage } from '../queue/messages';
import { writeRejectsPart } from '../runs/rejectsReport';
import { batchRejectsPartName, handoffBlobName, newToken, parkedBlobName, parkedPrefix, unreadableBlobName } from '../runs/runBlobs';
import type { StoredBatch } from '../runs/batchLedger';
import { isTerminal } from '../runs/runRecord';
import { emptyOutcome } from '../runs/runTable';
import { writeUndelivered } from '../state/deliveredState';
import { sendToQueue } from '../storage/queueSend';
import { isNotFound } from '../storage/storageErrors';
import { describeError, type UnreadableMessageError } from '../errors';
import { canMove, onReceipt, type BatchRecord, type BatchState } from '../runs/batchRecord';
import { emptyPart, unsentPart, type BatchPart, type Ending } from './batchEnding';

/**
 * The one writer of batch records: every change of a batch's state goes through here, is checked
 * against the transition table, and is recorded before the work it stands for acts.
 */

/**
 * How long a claim holds: the sender's budget, the last request's timeout, and time to record the
 * outcome. A copy that arrives within it waits; one after it takes over (the owner died). An owner
 * slower than its claim loses its write, and its batch is counted as the new owner sends it.
 */
function claimMs(deps: ConnectorDeps): number {
  const budget = deps.settings.senderBudgetMs;
  return budget + deps.settings.braze.requestTimeoutMs + Math.max(10_000, budget / 2);
}
/** A deferred child not seen this long after it was due is taken as lost and sent again. */
const LOST_CHILD_GRACE_MS = 10 * 60_000;
const MAX_CLAIM_ATTEMPTS = 20;

export interface ClaimedBatch {
  message: BrazeBatchMessage;
  stored: StoredBatch;
}

export type Receipt =
  | { kind: 'claimed'; batch: ClaimedBatch }
  | { kind: 'busy'; untilMs: number }
  | { kind: 'handingOff'; stored: StoredBatch }
  | { kind: 'duplicate'; stored: StoredBatch };

async function move(deps: ConnectorDeps, runId: string, batchId: string, from: StoredBatch | undefined, next: BatchRecord): Promise<StoredBatch | undefined> {
  const fromState: BatchState | 'new' = from?.record.state ?? 'new';
  if (!canMove(fromState, next.state)) throw new Error(`batch ${batchId} of run ${runId}: ${fromState} → ${next.state} is not a transition of a batch`);
  return deps.batches.write(runId, batchId, from, next);
}

/**
 * Looks at the batch's record before doing anything: claims it, or says why not. `reopen`: whether
 * a resumed copy may reopen a parked or failed batch — not once its run was superseded, whose
 * parked profiles the supersede counted failed already (reopened and failed, they would count twice).
 */
export async function receiveBatch(deps: ConnectorDeps, message: BrazeBatchMessage, reopen = true): Promise<Receipt> {
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    const stored = await deps.batches.read(message.runId, message.batchId);
    const nowMs = deps.clock.now();
    const decision = onReceipt(stored?.record, { resumed: (message.resumed ?? false) && reopen }, nowMs);
    if (decision.kind === 'busy') return { kind: 'busy', untilMs: decision.untilMs };
    if (decision.kind === 'duplicate') return { kind: 'duplicate', stored: stored! };
    if (decision.kind === 'finishHandoff') return { kind: 'handingOff', stored: stored! };
    const claim: BatchRecord = {
      state: 'sending',
      owner: newToken(),
      claimUntil: new Date(nowMs + claimMs(deps)).toISOString(),
      // A reopened batch keeps its old outcome until it closes again: the run adds only the difference.
      outcome: stored?.record.outcome ?? emptyOutcome(),
    };
    const claimed = await move(deps, message.runId, message.batchId, stored, claim);
    if (claimed) return { kind: 'claimed', batch: { message, stored: claimed } };
  }
  throw new Error(`batch ${message.batchId} of run ${message.runId}: could not claim it against concurrent copies`);
}

async function writeParts(deps: ConnectorDeps, runId: string, batchId: string, token: string, part: BatchPart): Promise<void> {
  const container = deps.storage.stateContainer;
  await Promise.all([
    writeRejectsPart(container, batchRejectsPartName(runId, batchId, token), part.rejectLines),
    writeUndelivered(container, runId, batchId, token, part.undelivered),
  ]);
}

/** Keeps a batch for a resume, which re-queues it. */
async function park(deps: ConnectorDeps, message: BrazeBatchMessage): Promise<void> {
  const text = encodeMessage({ ...message, deferrals: 0, resumed: undefined });
  await deps.storage.stateContainer.getBlockBlobClient(parkedBlobName(message.runId, message.batchId)).upload(text, Buffer.byteLength(text));
}

/** Whether any batch of the run waits parked for a resume. */
export async function hasParked(deps: ConnectorDeps, runId: string): Promise<boolean> {
  for await (const _item of deps.storage.stateContainer.listBlobsFlat({ prefix: parkedPrefix(runId) })) return true;
  return false;
}

/**
 * A resume's first step: the failed batches kept for it count as parked from now on, so the run
 * waits for them to be sent again. Counted failed, the run's counts would add up while they are on
 * the queue: it would be finalized at once, announced complete, and its state would say they were
 * not delivered.
 */
export async function reparkFailed(deps: ConnectorDeps, runId: string): Promise<void> {
  for await (const { batchId } of parkedBatches(deps, runId)) await reparkIfFailed(deps, runId, batchId);
}

/** The run's kept batch messages (parked, or failed and kept for a resume): each blob's name and batch id. */
async function* parkedBatches(deps: ConnectorDeps, runId: string): AsyncGenerator<{ name: string; batchId: string }> {
  const prefix = parkedPrefix(runId);
  for await (const item of deps.storage.stateContainer.listBlobsFlat({ prefix }))
    if (item.name.endsWith('.msg')) yield { name: item.name, batchId: item.name.slice(prefix.length, -'.msg'.length) };
}

/**
 * A failed batch's record moved to parked, its failed counts with it; answers the record as it is
 * then (a concurrent copy's move counts as well). Any other record is answered as it is.
 */
async function reparkIfFailed(deps: ConnectorDeps, runId: string, batchId: string): Promise<StoredBatch | undefined> {
  const stored = await deps.batches.read(runId, batchId);
  if (stored?.record.state !== 'failed') return stored;
  const failed = stored.record.outcome;
  const outcome = {
    ...failed,
    usersParked: failed.usersParked + failed.usersFailed,
    rowsParked: failed.rowsParked + failed.rowsFailed,
    usersFailed: 0,
    rowsFailed: 0,
  };
  return (await move(deps, runId, batchId, stored, { ...stored.record, state: 'parked', outcome })) ?? (await deps.batches.read(runId, batchId));
}

/**
 * Sends a run's parked batches (and failed ones kept for a resume, counted parked first) back to
 * the queue, each once re-queued removed. A batch whose owner is still ending it (a poison handler
 * between the kept copy and its record) stays for its owner to record and the next resume to take:
 * sent now, it would count failed while on the queue. Two callers at once may both send one: the
 * batch's claim makes it one batch.
 */
export async function requeueParked(deps: ConnectorDeps, runId: string): Promise<{ batches: number; profiles: number }> {
  const container = deps.storage.stateContainer;
  let batches = 0;
  let profiles = 0;
  for await (const item of parkedBatches(deps, runId)) {
    const stored = await reparkIfFailed(deps, runId, item.batchId);
    if (stored?.record.state === 'sending' || stored?.record.state === 'handingOff') continue;
    let text;
    try {
      text = (await container.getBlobClient(item.name).downloadToBuffer()).toString('utf8');
    } catch (error) {
      // Another caller re-queued it between the listing and now.
      if (isNotFound(error)) continue;
      throw error;
    }
    const message = decodeBatchMessage(text);
    await sendToQueue(deps.storage.batchQueue, encodeMessage({ ...message, deferrals: 0, resumed: true }));
    // Once re-queued, the parked copy (it holds identifiers) is not needed any more.
    await container.getBlobClient(item.name).deleteIfExists();
    batches += 1;
    profiles += message.profiles.length;
  }
  return { batches, profiles };
}

/**
 * Ends a claimed batch: its parts (rejects, undelivered) first, named by the owner's token, then
 * the record. 'lost' when the claim ran out and another delivery took the batch over: then
 * nothing this owner wrote counts.
 */
export async function closeBatch(deps: ConnectorDeps, batch: ClaimedBatch, ending: Ending, sources: string[]): Promise<'closed' | 'lost'> {
  const { runId, batchId } = batch.message;
  const { owner, claimUntil } = batch.stored.record;
  await writeParts(deps, runId, batchId, owner, ending.part);
  const next = (state: BatchState, extra: Partial<BatchRecord> = {}): BatchRecord => ({ state, owner, claimUntil, outcome: ending.part.outcome, ...extra });
  switch (ending.kind) {
    case 'settle':
      return (await move(deps, runId, batchId, batch.stored, next('settled'))) ? 'closed' : 'lost';
    case 'park':
      await park(deps, batch.message);
      return (await move(deps, runId, batchId, batch.stored, next('parked'))) ? 'closed' : 'lost';
    case 'fail':
      if (ending.keepForResume) await park(deps, batch.message);
      return (await move(deps, runId, batchId, batch.stored, next('failed'))) ? 'closed' : 'lost';
    case 'handOff': {
      const text = encodeMessage(ending.child);
      await deps.storage.stateContainer.getBlockBlobClient(handoffBlobName(runId, batchId, owner)).upload(text, Buffer.byteLength(text));
      const handingOff = await move(deps, runId, batchId, batch.stored, next('handingOff', { handoff: ending.handoff }));
      if (!handingOff) return 'lost';
      await finishHandoff(deps, runId, batchId, handingOff, sources);
      return 'closed';
    }
  }
}

async function readChild(deps: ConnectorDeps, runId: string, batchId: string, owner: string): Promise<BrazeBatchMessage | undefined> {
  try {
    const text = (await deps.storage.stateContainer.getBlobClient(handoffBlobName(runId, batchId, owner)).downloadToBuffer()).toString('utf8');
    return decodeBatchMessage(text);
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/**
 * Carries out a recorded hand-off and settles the parent. Safe to repeat: a child message sent
 * twice is one batch (its claim sees to that), a parked or failed child is created only once.
 */
export async function finishHandoff(deps: ConnectorDeps, runId: string, batchId: string, stored: StoredBatch, sources: string[]): Promise<void> {
  const handoff = stored.record.handoff;
  if (!handoff) throw new Error(`batch ${batchId} of run ${runId} is handing off without a hand-off record`);
  const child = await readChild(deps, runId, batchId, stored.record.owner);
  if (!child) {
    // Only a run that ended (superseded, failed) has its working blobs removed while batches are on their way.
    const run = await deps.runs.get(runId);
    if (!run || !isTerminal(run.status))
      throw new Error(`batch ${batchId} of run ${runId}: the child batch ${handoff.childBatchId} it hands off to is missing`);
    await move(deps, runId, batchId, stored, { ...stored.record, state: 'settled' });
    return;
  }
  if (handoff.kind === 'defer') {
    const dueMs = handoff.dueAt ? Date.parse(handoff.dueAt) : deps.clock.now();
    await sendToQueue(deps.storage.batchQueue, encodeMessage(child), dueMs - deps.clock.now());
  } else {
    await createClosedChild(deps, child, handoff.kind === 'park' ? 'parked' : 'failed', handoff.reason, sources);
  }
  // Lost only to a concurrent replay finishing the same hand-off: settled either way.
  await move(deps, runId, batchId, stored, { ...stored.record, state: 'settled' });
}

/** A child that never goes through the queue: parked until a resume, or failed and kept for one. */
async function createClosedChild(deps: ConnectorDeps, child: BrazeBatchMessage, state: 'parked' | 'failed', reason: string, sources: string[]): Promise<void> {
  if (await deps.batches.read(child.runId, child.batchId)) return;
  const token = newToken();
  const part = unsentPart(child.profiles, state, reason, sources);
  await writeParts(deps, child.runId, child.batchId, token, part);
  await park(deps, child);
  await move(deps, child.runId, child.batchId, undefined, { state, owner: token, claimUntil: new Date(deps.clock.now()).toISOString(), outcome: part.outcome });
}

/**
 * A duplicate of a batch that handed its rest to a deferred child: if that child never arrived
 * (its message lost on the way), send it again. A run resumed after a stall re-sends every batch
 * through here, so lost children are found too.
 */
export async function recoverLostChild(deps: ConnectorDeps, runId: string, batchId: string, stored: StoredBatch): Promise<boolean> {
  const handoff = stored.record.handoff;
  if (stored.record.state !== 'settled' || handoff?.kind !== 'defer') return false;
  const dueMs = handoff.dueAt ? Date.parse(handoff.dueAt) : 0;
  if (deps.clock.now() < dueMs + LOST_CHILD_GRACE_MS) return false;
  if (await deps.batches.read(runId, handoff.childBatchId)) return false;
  const child = await readChild(deps, runId, batchId, stored.record.owner);
  if (!child) return false;
  await sendToQueue(deps.storage.batchQueue, encodeMessage(child));
  deps.log.warn(`batch ${handoff.childBatchId} of run ${runId} was due since ${handoff.dueAt} and never arrived; sent again`);
  return true;
}

/**
 * A message that cannot be decoded is counted against its run at once, with the reason, instead
 * of failing five times on its way to the poison queue. What is left of it is kept beside the run.
 */
export async function recordUnreadable(deps: ConnectorDeps, error: UnreadableMessageError, payload: unknown): Promise<'recorded' | 'dropped'> {
  const { runId, batchId, profiles = 0, rows = 0 } = error.salvage;
  const run = runId ? await deps.runs.get(runId) : undefined;
  if (!run || !runId) {
    deps.log.error(`an unreadable batch message of no known run was dropped: ${describeError(error)}`);
    return 'dropped';
  }
  const text = Buffer.isBuffer(payload) ? payload.toString('utf8') : String(payload);
  const name = batchId ?? `unknown-${createHash('sha256').update(text).digest('hex').slice(0, 12)}`;
  await deps.storage.stateContainer.getBlockBlobClient(unreadableBlobName(runId, name)).upload(text, Buffer.byteLength(text));
  if (await deps.batches.read(runId, name)) return 'recorded';
  const token = newToken();
  const part = emptyPart();
  part.outcome.usersFailed = profiles;
  part.outcome.rowsFailed = rows;
  part.rejectLines.push({ outcome: 'failed', source: `queue message ${name}`, row: '', identifier: '', reason: `unreadable batch message: ${error.message}` });
  await writeParts(deps, runId, name, token, part);
  await move(deps, runId, name, undefined, { state: 'failed', owner: token, claimUntil: new Date(deps.clock.now()).toISOString(), outcome: part.outcome });
  deps.log.error(`batch ${name} of run ${runId} is unreadable (${profiles} profiles counted failed): ${error.message}`);
  return 'recorded';
}
