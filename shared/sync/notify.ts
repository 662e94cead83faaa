import { z } from 'zod';
import { findDestination, NOTIFY_EVENTS, type NotifyEvent, type NotifyTarget } from '../config/syncConfig';
import { describeError, InvalidInputError } from '../errors';
import { encodeMessage, type RunMessage } from '../queue/messages';
import type { ConnectorDeps } from '../runs/connectorDeps';
import type { RunPatch } from '../runs/runStore';
import type { RunRecord, RunStatus } from '../runs/runRecord';
import { sendToQueue } from '../storage/queueSend';
import { connectorEvents, recordFields, type ConnectorRecord } from '../telemetry';

type NotifyMessage = Extract<RunMessage, { kind: 'notify' }>;
type Summary = NotifyMessage['summary'];

/** The records a webhook can be told about, by the event its config names. */
const EVENT_OF: Partial<Record<ConnectorRecord['connectorEvent'], NotifyEvent>> = {
  RunCompleted: 'completed',
  RunFailed: 'failed',
  RunHeld: 'held',
  RunHalted: 'halted',
  RunStalled: 'stalled',
  RunReconciled: 'drift',
};

/**
 * What a change of status owes: its run record (what the Azure Monitor alerts read) and a message to
 * each webhook that asked for its event. It is written on the run in the same update as the status,
 * and taken off once the record is written and each message queued: a worker that dies in between,
 * or a queue that refuses a message, leaves it owed, and the timer's sweep finishes it (an alert or
 * a webhook may then be told twice; none is left untold).
 */
const owedNoticeSchema = z.object({
  id: z.string(),
  /** When it became owed (epoch ms): the sweep leaves a fresh one to the worker that owes it. */
  at: z.number(),
  event: z.enum(NOTIFY_EVENTS),
  summary: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])),
  /** The webhooks (places in the destination's `notify`) not yet queued. */
  targets: z.array(z.number().int().min(0)),
  /** The run record was written (only the webhooks are left). */
  recorded: z.boolean().optional(),
});
export type OwedNotice = z.output<typeof owedNoticeSchema>;
const owedNoticesSchema = z.array(owedNoticeSchema);

/** A sweep leaves a notice this fresh to the worker that is queueing it. */
export const OWED_NOTICE_GRACE_MS = 60_000;
/** What one run keeps owing at most: the oldest go first (a run that loops between statuses). */
const MAX_OWED_NOTICES = 8;
/**
 * The owed notices' JSON stays well under what a table property holds (64 KiB, 32K characters): a
 * status write that carried more would fail, and the status with it. Long texts (a reason listing
 * every problem of a model.json) are cut in the notice; the run's error keeps its own cut.
 */
const MAX_OWED_CHARS = 24_000;
const MAX_SUMMARY_TEXT = 2_000;

/** The notices a run owes; a list that does not read is logged and dropped (it cannot be sent). */
export function owedNotices(run: Pick<RunRecord, 'runId' | 'owedNotices'>, log?: ConnectorDeps['log']): OwedNotice[] {
  if (!run.owedNotices) return [];
  let json: unknown;
  try {
    json = JSON.parse(run.owedNotices);
  } catch {
    json = undefined;
  }
  const parsed = owedNoticesSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  log?.warn(`run ${run.runId}: its owed notifications do not read; dropped`);
  return [];
}

/**
 * What a change of `run` to `status` owes with this record: the record itself, and the webhooks that
 * asked for its event (none for an event no webhook is told of).
 */
export function noticeFor(deps: ConnectorDeps, run: RunRecord, status: RunStatus, record: ConnectorRecord): OwedNotice | undefined {
  const event = EVENT_OF[record.connectorEvent];
  if (!event) return undefined;
  // A reconcile is worth telling a webhook about when it found something to repair.
  const told = !(record.connectorEvent === 'RunReconciled' && record.profilesToRepair === 0);
  const targets = told
    ? (findDestination(deps.config, run.destination, run.instance)?.notify ?? []).flatMap((target, index) => (target.on.includes(event) ? [index] : []))
    : [];
  const at = deps.clock.now();
  const summary: Summary = { event, ...record, instance: run.instance, refresh: run.refreshLabel, status, statusPath: `/api/runs/${run.runId}` };
  for (const [name, value] of Object.entries(summary))
    if (typeof value === 'string' && value.length > MAX_SUMMARY_TEXT) summary[name] = `${value.slice(0, MAX_SUMMARY_TEXT)}…`;
  return { id: `${event}-${at}`, at, event, summary, targets };
}

/** The patch that owes `notice` besides what `run` already owes (nothing when there is no notice). */
export function owing(run: RunRecord, notice: OwedNotice | undefined): Pick<RunPatch, 'owedNotices'> {
  if (!notice) return {};
  const owed = [...owedNotices(run), notice].slice(-MAX_OWED_NOTICES);
  while (owed.length > 1 && JSON.stringify(owed).length > MAX_OWED_CHARS) owed.shift();
  return { owedNotices: JSON.stringify(owed) };
}

/** The patch a change of `run` to `status` makes to owe what it owes with this record (see noticeFor and owing). */
export function owe(deps: ConnectorDeps, run: RunRecord, status: RunStatus, record: ConnectorRecord): Pick<RunPatch, 'owedNotices'> {
  return owing(run, noticeFor(deps, run, status, record));
}

/**
 * Writes the run record a change of status made and queues the notice the change owes (written on
 * `run` by owe: the newest of its event), then takes it off the run: what could not be queued stays owed for the sweep. The record
 * is the summary the webhooks get (ids, counts, reasons: no identifier, e-mail or name, by its
 * type), with the run's refresh and where to see it. Each webhook gets its own queue message, so
 * one that is down delays no other; a failure to enqueue is logged, never the run's.
 */
export async function announceOwed(deps: ConnectorDeps, run: RunRecord, record: ConnectorRecord): Promise<void> {
  deps.log.record(record);
  const notice = owedNotices(run, deps.log)
    .filter((owed) => owed.summary.connectorEvent === record.connectorEvent && !owed.recorded)
    .at(-1);
  if (notice) await sendOwed(deps, run, notice);
}

/** Queues what is owed of `notice` (its record written), and leaves owed on the run only the webhooks whose message the queue refused. */
async function sendOwed(deps: ConnectorDeps, run: RunRecord, notice: OwedNotice): Promise<void> {
  const unsent = await queueNotice(deps, run, notice.event, notice.summary, notice.targets);
  try {
    await deps.runs.update(run.runId, (current) => {
      const owed = owedNotices(current, deps.log);
      const at = owed.findIndex((n) => n.id === notice.id);
      if (at < 0) return undefined;
      // Refused again, and recorded already: nothing to write (a write would count as the run's progress).
      if (unsent.length && owed[at].recorded && unsent.length === owed[at].targets.length) return undefined;
      if (unsent.length) owed[at] = { ...owed[at], targets: unsent, recorded: true };
      else owed.splice(at, 1);
      return { owedNotices: owed.length ? JSON.stringify(owed) : undefined };
    });
  } catch (error) {
    // Still owed on the run: the sweep queues it again (a webhook told twice, never left untold).
    deps.log.warn(
      `run ${run.runId}: the ${notice.event} notification was queued but could not be marked so (${describeError(error)}); the sweep may send it again`,
    );
  }
}

/**
 * The sweep's part: queues the notices `run` still owes that its own worker should have queued by
 * now (a crash between the status and its notice, a queue that refused). Answers how many it sent.
 */
export async function sendOwedNotices(deps: ConnectorDeps, run: RunRecord, now: number, graceMs = OWED_NOTICE_GRACE_MS): Promise<number> {
  const due = owedNotices(run, deps.log).filter((notice) => now - notice.at >= graceMs);
  for (const notice of due) {
    deps.log.warn(`run ${run.runId}: the ${notice.event} notification was owed since ${new Date(notice.at).toISOString()}; sent now`);
    const record = notice.recorded ? undefined : recordOf(notice.summary);
    if (record) deps.log.record(record);
    await sendOwed(deps, run, notice);
  }
  return due.length;
}

/** The run record a notice's summary carries: its event's fields (telemetry's list), nothing the summary adds. */
function recordOf(summary: Summary): ConnectorRecord | undefined {
  const event = summary.connectorEvent;
  if (typeof event !== 'string' || !(connectorEvents as readonly string[]).includes(event)) return undefined;
  const fields = recordFields[event as ConnectorRecord['connectorEvent']] as readonly string[];
  // The summary was built from such a record; its fields are the record's, by the list above.
  return Object.fromEntries([['connectorEvent', event], ...fields.filter((name) => name in summary).map((name) => [name, summary[name]])]) as ConnectorRecord;
}

/** Queues one message per webhook; answers the webhooks whose message the queue refused (each is logged). */
async function queueNotice(deps: ConnectorDeps, run: RunRecord, event: NotifyEvent, summary: Summary, targets: number[]): Promise<number[]> {
  const unsent: number[] = [];
  for (const target of targets) {
    const message: NotifyMessage = {
      kind: 'notify',
      runId: run.runId,
      event,
      destination: run.destination,
      ...(run.instance ? { instance: run.instance } : {}),
      target,
      summary,
      attempt: 0,
    };
    try {
      await sendToQueue(deps.storage.runQueue, encodeMessage(message));
    } catch (error) {
      unsent.push(target);
      deps.log.warn(`run ${run.runId}: the ${event} notification could not be queued (${describeError(error)}); the run goes on`);
    }
  }
  return unsent;
}

/**
 * Posts one notification. A webhook that answers 2xx is done; a refusal it will repeat (4xx but 408
 * and 429) is given up at once; anything else comes back later, until the last try. Never throws
 * for the webhook's sake: the run is not the webhook's.
 */
export async function deliverNotification(deps: ConnectorDeps, message: NotifyMessage): Promise<void> {
  // The webhook as the config says now: a message names none by URL, so it can reach only a configured one.
  const target = findDestination(deps.config, message.destination, message.instance)?.notify[message.target];
  if (!target || !(target.on as readonly string[]).includes(message.event)) {
    deps.log.warn(
      `run ${message.runId}: the ${message.event} notification's webhook (notify[${message.target}] of ${message.destination}) is no longer configured for it; dropped`,
    );
    return;
  }
  const what = `run ${message.runId}: the ${message.event} notification (${target.format}${target.urlSetting ? `, ${target.urlSetting}` : ''})`;
  const outcome = await post(deps, target, message.summary);
  if (outcome.ok) {
    deps.log.info(`${what} was delivered`);
    return;
  }
  // After 30 s, 2, 10 and 30 minutes by default (NOTIFY_RETRY_SECONDS); then given up, and logged.
  const delay = outcome.retry ? deps.settings.notifyRetryDelaysMs[message.attempt] : undefined;
  if (delay === undefined) {
    deps.log.error(`${what} was given up after ${message.attempt + 1} tries: ${outcome.reason}`);
    return;
  }
  deps.log.warn(`${what} failed (${outcome.reason}); tried again in ${delay / 1000} s`);
  await sendToQueue(deps.storage.runQueue, encodeMessage({ ...message, attempt: message.attempt + 1 }), delay);
}

async function post(deps: ConnectorDeps, target: NotifyTarget, summary: Summary): Promise<{ ok: true } | { ok: false; retry: boolean; reason: string }> {
  let url: string;
  try {
    url = await deps.webhookUrl(target);
  } catch (error) {
    // A Key Vault read that failed says why (no access, no such secret); it never holds the value.
    // An app setting that is not set stays so until the app restarts.
    const unset = error instanceof InvalidInputError;
    return { ok: false, retry: !unset, reason: `its URL could not be read: ${unset ? error.message : describeError(error)}` };
  }
  try {
    const answer = await deps.webhooks.post(url, notificationBody(target.format, summary), { headers: { 'Content-Type': 'application/json' } });
    if (answer.status >= 200 && answer.status < 300) return { ok: true };
    return { ok: false, retry: answer.status >= 500 || answer.status === 408 || answer.status === 429, reason: `the webhook answered ${answer.status}` };
  } catch (error) {
    // The URL is a secret, and axios's error carries it: the reason names the failure, not where it went.
    const code = (error as { code?: string }).code;
    return { ok: false, retry: true, reason: code ? `no answer (${code})` : 'no answer' };
  }
}

/** The request body for a webhook of this format. */
export function notificationBody(format: 'json' | 'slack' | 'teams', summary: Summary): unknown {
  if (format === 'json') return summary;
  const title = `${HEADLINES[String(summary.event)] ?? String(summary.event)}: ${String(summary.destination)} (run ${String(summary.runId)})`;
  const facts = Object.entries(summary).filter(
    ([name, value]) => !['event', 'connectorEvent', 'destination', 'runId'].includes(name) && value !== null && value !== undefined,
  );
  if (format === 'slack') {
    // An incoming webhook's message: text, with the facts as a list (Slack's mrkdwn).
    return { text: [`*${title}*`, ...facts.map(([name, value]) => `• ${name}: ${String(value)}`)].join('\n') };
  }
  // A Teams Workflows webhook ("When a Teams webhook request is received") takes a message with an Adaptive Card.
  return {
    type: 'message',
    attachments: [
      {
        contentType: 'application/vnd.microsoft.card.adaptive',
        contentUrl: null,
        content: {
          $schema: 'http://adaptivecards.io/schemas/adaptive-card.json',
          type: 'AdaptiveCard',
          version: '1.4',
          body: [
            { type: 'TextBlock', text: title, weight: 'Bolder', size: 'Medium', wrap: true },
            { type: 'FactSet', facts: facts.map(([name, value]) => ({ title: name, value: String(value) })) },
          ],
        },
      },
    ],
  };
}

const HEADLINES: Record<string, string> = {
  completed: 'Sync completed',
  failed: 'Sync failed',
  held: 'Sync held for approval',
  halted: 'Sync halted: Braze refused the key or cannot be reached',
  stalled: 'Sync stalled',
  drift: 'Reconcile found drift',
};
