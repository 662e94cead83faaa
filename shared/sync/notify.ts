import { findDestination, type NotifyEvent, type NotifyTarget } from '../config/syncConfig';
import { describeError, InvalidInputError } from '../errors';
import { encodeMessage, type RunMessage } from '../queue/messages';
import type { ConnectorDeps } from '../runs/connectorDeps';
import type { RunRecord } from '../runs/runRecord';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorRecord } from '../telemetry';

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
 * Writes a run record and tells the destination's webhooks that asked for its event. The record is
 * the summary they get (ids, counts, reasons: no identifier, e-mail or name, by its type), with the
 * run's refresh and where to see it. Each webhook gets its own queue message, so one that is down
 * delays no other; a failure to enqueue is logged, never the run's.
 */
export async function announce(deps: ConnectorDeps, run: RunRecord, record: ConnectorRecord): Promise<void> {
  deps.log.record(record);
  let event = EVENT_OF[record.connectorEvent];
  // A reconcile is worth telling about when it found something to repair.
  if (record.connectorEvent === 'RunReconciled' && record.profilesToRepair === 0) event = undefined;
  if (!event) return;
  const targets = (findDestination(deps.config, run.destination, run.instance)?.notify ?? []).flatMap((target, index) =>
    target.on.includes(event!) ? [index] : [],
  );
  if (targets.length === 0) return;
  const summary: Summary = { event, ...record, instance: run.instance, refresh: run.refreshLabel, status: run.status, statusPath: `/api/runs/${run.runId}` };
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
      deps.log.warn(`run ${run.runId}: the ${event} notification could not be queued (${describeError(error)}); the run goes on`);
    }
  }
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
