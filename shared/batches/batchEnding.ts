import { describeIdentifier, dataPointsOf } from '../mapping/profileIdentity';
import type { BatchProfile, BrazeBatchMessage } from '../queue/messages';
import { atLine } from '../ci/partitionReader';
import type { RejectLine } from '../runs/rejectsReport';
import { emptyOutcome, type BatchOutcome } from '../runs/runTable';
import type { Handoff } from '../runs/batchRecord';
import type { ProfileResult, SendResult } from './sendBatch';

/** After this many hand-backs (minutes to an hour of Braze trouble), the rest of a batch is failed and kept for a resume. */
export const MAX_DEFERRALS = 8;
const MAX_DEFERRAL_DELAY_MS = 10 * 60_000;
/** The server's own delay is trusted up to this (hourly rate limits reset within the hour). */
const MAX_SERVER_DELAY_MS = 65 * 60_000;

/** What a batch (or the part of it it settles) adds to the run: counts, reject lines, and the profiles Braze did not take. */
export interface BatchPart {
  outcome: BatchOutcome;
  rejectLines: RejectLine[];
  /** Hashes of profiles not delivered: their delivered state stays as it was. */
  undelivered: string[];
}

/** How a claimed batch ends. */
export type Ending =
  | { kind: 'settle'; part: BatchPart }
  /** The batch settles what it could; the rest moves to a child batch. */
  | { kind: 'handOff'; part: BatchPart; handoff: Handoff; child: BrazeBatchMessage }
  /** The whole batch waits for a resume (the run is halted). */
  | { kind: 'park'; part: BatchPart; reason: string }
  /** The whole batch failed; kept for a resume unless its run has ended. */
  | { kind: 'fail'; part: BatchPart; keepForResume: boolean };

export function emptyPart(): BatchPart {
  return { outcome: emptyOutcome(), rejectLines: [], undelivered: [] };
}

/** A reject line names the partition blob and row, and the identifier unless it is an e-mail. */
function rejectLine(sources: string[], profile: BatchProfile, outcome: RejectLine['outcome'], reason: string): RejectLine {
  const identifier = describeIdentifier(profile.identifier);
  if (profile.source === 'leaver') return { outcome, source: 'leaver (segment exit)', row: '', identifier, reason };
  const source = sources[profile.source.partition] ?? `partition ${profile.source.partition}`;
  return { outcome, source, row: profile.source.row, identifier, reason: reason + atLine(profile.source.line ?? 0) };
}

/** Reasons are counted with their numbers folded, so "Braze 400: …" of many requests is one line. */
function reasonKey(reason: string): string {
  return reason.replace(/\d+/g, 'N');
}

/** The profiles Braze answered for: delivered or rejected. Unsent ones are left to the hand-off. */
export function answeredPart(profiles: BatchProfile[], results: ProfileResult[], sources: string[], requests: number): BatchPart {
  const part = emptyPart();
  part.outcome.brazeRequests = requests;
  profiles.forEach((profile, i) => {
    const result = results[i];
    if (result.kind === 'delivered') {
      part.outcome.usersDelivered += 1;
      part.outcome.rowsDelivered += profile.rows;
      part.outcome.dataPointsSent += dataPointsOf(profile.attributes);
    } else if (result.kind === 'rejected') {
      part.outcome.usersRejected += 1;
      part.outcome.rowsRejectedBraze += profile.rows;
      const key = reasonKey(result.reason);
      part.outcome.rejectedByReason[key] = (part.outcome.rejectedByReason[key] ?? 0) + profile.rows;
      part.rejectLines.push(rejectLine(sources, profile, 'rejected', result.reason));
      part.undelivered.push(profile.hash);
    }
  });
  return part;
}

/** Profiles that were not sent, counted parked (waiting for a resume) or failed (with a reject line). */
export function unsentPart(profiles: BatchProfile[], as: 'parked' | 'failed', reason: string, sources: string[]): BatchPart {
  const part = emptyPart();
  for (const profile of profiles) {
    part.undelivered.push(profile.hash);
    if (as === 'parked') {
      part.outcome.usersParked += 1;
      part.outcome.rowsParked += profile.rows;
    } else {
      part.outcome.usersFailed += 1;
      part.outcome.rowsFailed += profile.rows;
      part.rejectLines.push(rejectLine(sources, profile, 'failed', reason));
    }
  }
  return part;
}

/**
 * How a batch ends after sending: settled when every profile was answered; otherwise the unsent
 * rest goes to a child batch — parked on bad credentials or an endpoint that cannot be reached,
 * handed back to the queue while Braze is unavailable, failed after MAX_DEFERRALS hand-backs.
 */
export function endingAfterSend(message: BrazeBatchMessage, sent: SendResult, sources: string[], nowMs: number): Ending {
  const part = answeredPart(message.profiles, sent.results, sources, sent.requests);
  // A rename or merge Braze already made is not asked for again (the old ID is no longer primary).
  const unsent = message.profiles.flatMap((profile, i) => {
    if (sent.results[i].kind !== 'unsent') return [];
    if (!sent.prepared.has(i)) return [profile];
    const { rename: _rename, identify: _identify, ...rest } = profile;
    return [rest];
  });
  if (unsent.length === 0) return { kind: 'settle', part };
  const child = (suffix: string, deferrals: number): BrazeBatchMessage => ({
    kind: 'brazeBatch',
    runId: message.runId,
    batchId: `${message.batchId}~${suffix}`,
    deferrals,
    profiles: unsent,
  });
  if (sent.haltError) {
    const c = child('p', 0);
    return { kind: 'handOff', part, child: c, handoff: { kind: 'park', childBatchId: c.batchId, reason: sent.haltError.message } };
  }
  const why = sent.retryError?.message ?? 'Braze did not answer in time';
  if (message.deferrals + 1 >= MAX_DEFERRALS) {
    const c = child('f', 0);
    return {
      kind: 'handOff',
      part,
      child: c,
      handoff: { kind: 'fail', childBatchId: c.batchId, reason: `Braze unavailable after ${MAX_DEFERRALS} deferrals: ${why}` },
    };
  }
  const delayMs = deferralDelayMs(sent, message.deferrals, nowMs);
  const c = child(String(message.deferrals + 1), message.deferrals + 1);
  return { kind: 'handOff', part, child: c, handoff: { kind: 'defer', childBatchId: c.batchId, reason: why, dueAt: new Date(nowMs + delayMs).toISOString() } };
}

/** The server's own delay when it gave one (a 429's reset), else exponential backoff; at least a second. */
export function deferralDelayMs(sent: Pick<SendResult, 'retryError'>, deferrals: number, nowMs: number): number {
  const error = sent.retryError;
  const serverSays = error?.retryAtMs !== undefined ? Math.min(MAX_SERVER_DELAY_MS, error.retryAtMs - nowMs) : 0;
  const backoff = Math.min(MAX_DEFERRAL_DELAY_MS, 5_000 * 2 ** deferrals);
  return Math.max(1_000, serverSays, error?.status === 429 ? 0 : backoff);
}
