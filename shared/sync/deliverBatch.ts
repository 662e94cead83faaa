import { findDestination } from '../config/syncConfig';
import { closeBatch, finishHandoff, receiveBatch, recordUnreadable, recoverLostChild, requeueParked } from '../batches/batchLife';
import { endingAfterSend, unsentPart, type Ending } from '../batches/batchEnding';
import { sendProfiles } from '../batches/sendBatch';
import { UnreadableMessageError } from '../errors';
import { decodeBatchMessage, encodeMessage } from '../queue/messages';
import type { BatchOutcome } from '../runs/runTable';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { requestFinalizeIfComplete } from './finalizeRun';
import { haltRun } from './runEvents';
import { sourceNames } from '../runs/runSources';
import { touchedBatchBlobName } from '../runs/runBlobs';

export type DeliveryResult =
  | { kind: 'done' | 'parked' | 'deferred' | 'failed'; outcome: BatchOutcome }
  /** Already settled by another copy of the message: nothing was written. */
  | { kind: 'duplicate' }
  /** Another copy is working on it: a copy of the message comes back when that copy's claim ends. */
  | { kind: 'busy' }
  /** A replay that finished an interrupted hand-off. */
  | { kind: 'handoffFinished' }
  /** Its claim ran out while sending and another copy took the batch over; nothing of this attempt counts. */
  | { kind: 'lost' }
  | { kind: 'unreadable' | 'dropped' };

/**
 * One queue message's batch, start to end: claim it (a duplicate stops here, having written
 * nothing), send it, decide its ending, record that ending, and ask for the run's end when it was
 * the last. Braze attribute updates are idempotent, so a batch taken over after a crash may be
 * sent twice; it is counted once.
 */
export async function deliverBatch(deps: ConnectorDeps, payload: unknown, delivery: { enqueuedAtMs?: number } = {}): Promise<DeliveryResult> {
  let message;
  try {
    message = decodeBatchMessage(payload);
  } catch (error) {
    if (!(error instanceof UnreadableMessageError)) throw error;
    return { kind: (await recordUnreadable(deps, error, payload)) === 'recorded' ? 'unreadable' : 'dropped' };
  }
  const run = await deps.runs.get(message.runId);
  if (!run) {
    deps.log.warn(`batch ${message.batchId}: run ${message.runId} does not exist; dropped`);
    return { kind: 'dropped' };
  }

  const receipt = await receiveBatch(deps, message, run.status !== 'superseded');
  if (receipt.kind === 'duplicate') {
    await recoverLostChild(deps, message.runId, message.batchId, receipt.stored);
    return { kind: 'duplicate' };
  }
  if (receipt.kind === 'busy') {
    // Should its owner die, this copy takes over once the claim has run out.
    await sendToQueue(deps.storage.batchQueue, encodeMessage(message), receipt.untilMs - deps.clock.now() + 1_000);
    return { kind: 'busy' };
  }
  const claimedAtMs = deps.clock.now();
  const sources = await sourceNames(deps, run);
  if (receipt.kind === 'handingOff') {
    await finishHandoff(deps, message.runId, message.batchId, receipt.stored, sources);
    if (receipt.stored.record.handoff?.kind === 'park') await requeueIfResumed(deps, message.runId);
    await requestFinalizeIfComplete(deps, message.runId);
    return { kind: 'handoffFinished' };
  }

  let ending: Ending;
  let http429 = 0;
  if (run.status === 'halted') {
    ending = { kind: 'park', part: unsentPart(message.profiles, 'parked', run.error ?? 'run halted', sources), reason: run.error ?? 'run halted' };
  } else if (run.status === 'failed' || run.status === 'superseded') {
    const reason = `run ${run.status}${run.supersededBy ? ` by ${run.supersededBy}` : ''}`;
    ending = { kind: 'fail', part: unsentPart(message.profiles, 'failed', reason, sources), keepForResume: false };
  } else {
    const workspace = findDestination(deps.config, run.destination, run.instance)?.workspace;
    const sent = await sendProfiles(deps.brazeFor(workspace), message.profiles, deps.clock.now() + deps.settings.senderBudgetMs);
    if (sent.unattributedErrors.length) deps.log.warn(`batch ${message.batchId}: Braze reported errors without a row: ${sent.unattributedErrors.join('; ')}`);
    // Each deletion Braze took is recorded for audit (key hash, run, time) before the batch is.
    for (const [i, profile] of message.profiles.entries())
      if (profile.erase && sent.results[i].kind === 'delivered') await deps.erasures.record(run.modelJsonPath, profile.hash, run.runId);
    if (sent.haltError) await haltRun(deps, message.runId, sent.haltError, workspace);
    http429 = sent.http429;
    ending = endingAfterSend(message, sent, sources, deps.clock.now());
    // Braze's refusals, by key hash, for GET /api/users/{id} (named by this claim's token: a copy that took over writes its own).
    const refused = message.profiles.flatMap((profile, i) => {
      const result = sent.results[i];
      return result.kind === 'rejected' ? [JSON.stringify({ h: profile.hash, c: 'rejected', r: result.reason })] : [];
    });
    if (refused.length) {
      const text = refused.join('\n');
      await deps.storage.stateContainer
        .getBlockBlobClient(touchedBatchBlobName(message.runId, message.batchId, receipt.batch.stored.record.owner))
        .upload(text, Buffer.byteLength(text));
    }
  }

  if ((await closeBatch(deps, receipt.batch, ending, sources)) === 'lost') {
    deps.log.warn(`batch ${message.batchId} of run ${message.runId}: its claim ran out before it was recorded; the copy that took over counts`);
    return { kind: 'lost' };
  }
  logEnding(deps, message.runId, message.batchId, ending);
  const kind = resultKind(ending);
  if (kind === 'parked') await requeueIfResumed(deps, message.runId);
  const counts = ending.part.outcome;
  deps.log.record({
    connectorEvent: 'BatchEnded',
    runId: message.runId,
    batchId: message.batchId,
    ending: kind === 'done' ? 'settled' : kind,
    delivered: counts.usersDelivered,
    rejected: counts.usersRejected,
    failed: counts.usersFailed,
    parked: counts.usersParked,
    handedOn: ending.kind === 'handOff' ? ending.child.profiles.length : 0,
    brazeRequests: counts.brazeRequests,
    http429,
    durationMs: deps.clock.now() - claimedAtMs,
    ...(delivery.enqueuedAtMs !== undefined ? { queueLagMs: Math.max(0, claimedAtMs - delivery.enqueuedAtMs) } : {}),
  });
  await requestFinalizeIfComplete(deps, message.runId);
  return { kind, outcome: counts };
}

/**
 * A batch parks on the run it read halted; a resume may have come between that read and the park,
 * and listed the parked batches before this one was there. Looked at again once it is parked: a run
 * sending again takes it back at once (a resume after this read finds it itself).
 */
async function requeueIfResumed(deps: ConnectorDeps, runId: string): Promise<void> {
  const run = await deps.runs.get(runId);
  if (run?.status !== 'sending' && run?.status !== 'enqueuing') return;
  const { batches, profiles } = await requeueParked(deps, runId);
  if (batches > 0) deps.log.info(`run ${runId} was resumed while a batch parked: ${batches} parked batches (${profiles} profiles) re-queued`);
}

function resultKind(ending: Ending): 'done' | 'parked' | 'deferred' | 'failed' {
  if (ending.kind === 'park') return 'parked';
  if (ending.kind === 'fail') return 'failed';
  if (ending.kind === 'handOff') return ending.handoff.kind === 'defer' ? 'deferred' : ending.handoff.kind === 'park' ? 'parked' : 'failed';
  return 'done';
}

function logEnding(deps: ConnectorDeps, runId: string, batchId: string, ending: Ending): void {
  if (ending.kind === 'park') deps.log.warn(`batch ${batchId} of run ${runId} parked (${ending.part.outcome.usersParked} profiles) until resume`);
  if (ending.kind !== 'handOff') return;
  const profiles = ending.child.profiles.length;
  const { handoff } = ending;
  if (handoff.kind === 'defer') {
    const seconds = Math.max(0, Math.ceil((Date.parse(handoff.dueAt ?? '') - deps.clock.now()) / 1000));
    deps.log.warn(`batch ${batchId}: ${profiles} profiles handed back for ${seconds} s (${handoff.reason})`);
  } else if (handoff.kind === 'park') {
    deps.log.warn(`batch ${batchId} of run ${runId}: ${profiles} profiles parked until resume`);
  } else {
    deps.log.error(`batch ${batchId} of run ${runId}: ${profiles} profiles failed; ${handoff.reason}`);
  }
}
