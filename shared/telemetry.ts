/**
 * The connector's run records: what an operator queries (docs/operations.md) and the alerts fire
 * on (infra/modules/alerts.bicep). Each is written as one JSON line, `{"connectorEvent": …}`, which
 * the Functions host sends to Application Insights as a trace; KQL reads it with parse_json.
 * Fields are ids, statuses, counts, durations and reasons — never an identifier, e-mail, name or
 * key: the types admit nothing else, and the reasons are the ones already redacted for the run
 * record.
 */
export type ConnectorRecord =
  /** What one trigger (a timer tick, a request, a blob event) came to: the runs it started or met, and why others did not start. */
  | { connectorEvent: 'SyncRequested'; trigger: string; runIds: string; runsCreated: number; problems: number; problemReasons: string }
  | { connectorEvent: 'RunQueued'; runId: string; destination: string; trigger: string; refresh: string; force: boolean; reconcile?: boolean }
  | {
      connectorEvent: 'RunEnqueued';
      runId: string;
      destination: string;
      rowsRead: number;
      rowsUnchanged: number;
      rowsRejected: number;
      profilesEnqueued: number;
      exits: number;
      batches: number;
      durationMs: number;
    }
  | {
      connectorEvent: 'RunCompleted';
      runId: string;
      destination: string;
      rowsRead: number;
      rowsDelivered: number;
      rowsUnchanged: number;
      rowsRejected: number;
      rowsFailed: number;
      profilesDelivered: number;
      exits: number;
      brazeRequests: number;
      dataPointsSent: number;
      dataPointsFullSend: number;
      durationMs: number;
    }
  | {
      connectorEvent: 'RunPreviewed';
      runId: string;
      destination: string;
      rowsRead: number;
      profilesWouldSend: number;
      exits: number;
      brazeRequests: number;
      dataPoints: number;
    }
  | {
      connectorEvent: 'RunReconciled';
      runId: string;
      destination: string;
      dryRun: boolean;
      missing: number;
      stray: number;
      unresolved: number;
      staleValues: number;
      profilesToRepair: number;
      usersUnmatched: number;
    }
  | { connectorEvent: 'RunFailed'; runId: string; destination: string; reason: string }
  | { connectorEvent: 'RunHalted'; runId: string; destination: string; brazeStatus: number; reason: string }
  | {
      connectorEvent: 'RunHeld';
      runId: string;
      destination: string;
      /** Why the guard held it: counts and shares per segment, no PII. */
      reason: string;
      profilesWouldSend: number;
      exits: number;
    }
  | { connectorEvent: 'RunApproved'; runId: string; destination: string }
  | { connectorEvent: 'RunCancelled'; runId: string; destination: string; previousStatus: string }
  | { connectorEvent: 'RunStalled'; runId: string; destination: string; quietMinutes: number; profilesPending: number; reason: string }
  | { connectorEvent: 'RunSuperseded'; runId: string; destination: string; supersededBy: string; previousStatus: string; reason: string }
  | { connectorEvent: 'RunExpired'; runId: string; destination: string }
  | {
      connectorEvent: 'BatchEnded';
      runId: string;
      batchId: string;
      ending: 'settled' | 'deferred' | 'parked' | 'failed';
      delivered: number;
      rejected: number;
      failed: number;
      parked: number;
      handedOn: number;
      brazeRequests: number;
      http429: number;
      durationMs: number;
      /** From the message's insertion on the queue to its claim. */
      queueLagMs?: number;
    }
  | { connectorEvent: 'BatchPoisoned'; runId: string; batchId: string; profiles: number };

/** Every record name, for the alert rules and queries to be checked against. */
export const connectorEvents = [
  'SyncRequested',
  'RunQueued',
  'RunEnqueued',
  'RunCompleted',
  'RunPreviewed',
  'RunReconciled',
  'RunFailed',
  'RunHalted',
  'RunHeld',
  'RunApproved',
  'RunCancelled',
  'RunStalled',
  'RunSuperseded',
  'RunExpired',
  'BatchEnded',
  'BatchPoisoned',
] as const satisfies readonly ConnectorRecord['connectorEvent'][];

type FieldOf<E extends ConnectorRecord['connectorEvent']> = Exclude<keyof Extract<ConnectorRecord, { connectorEvent: E }>, 'connectorEvent'>;

/** Every field of every record, for the alert rules' and the workbook's queries to be checked against. */
export const recordFields: { [E in ConnectorRecord['connectorEvent']]: readonly FieldOf<E>[] } = {
  SyncRequested: ['trigger', 'runIds', 'runsCreated', 'problems', 'problemReasons'],
  RunQueued: ['runId', 'destination', 'trigger', 'refresh', 'force', 'reconcile'],
  RunEnqueued: ['runId', 'destination', 'rowsRead', 'rowsUnchanged', 'rowsRejected', 'profilesEnqueued', 'exits', 'batches', 'durationMs'],
  RunCompleted: [
    'runId',
    'destination',
    'rowsRead',
    'rowsDelivered',
    'rowsUnchanged',
    'rowsRejected',
    'rowsFailed',
    'profilesDelivered',
    'exits',
    'brazeRequests',
    'dataPointsSent',
    'dataPointsFullSend',
    'durationMs',
  ],
  RunPreviewed: ['runId', 'destination', 'rowsRead', 'profilesWouldSend', 'exits', 'brazeRequests', 'dataPoints'],
  RunReconciled: ['runId', 'destination', 'dryRun', 'missing', 'stray', 'unresolved', 'staleValues', 'profilesToRepair', 'usersUnmatched'],
  RunFailed: ['runId', 'destination', 'reason'],
  RunHalted: ['runId', 'destination', 'brazeStatus', 'reason'],
  RunHeld: ['runId', 'destination', 'reason', 'profilesWouldSend', 'exits'],
  RunApproved: ['runId', 'destination'],
  RunCancelled: ['runId', 'destination', 'previousStatus'],
  RunStalled: ['runId', 'destination', 'quietMinutes', 'profilesPending', 'reason'],
  RunSuperseded: ['runId', 'destination', 'supersededBy', 'previousStatus', 'reason'],
  RunExpired: ['runId', 'destination'],
  BatchEnded: ['runId', 'batchId', 'ending', 'delivered', 'rejected', 'failed', 'parked', 'handedOn', 'brazeRequests', 'http429', 'durationMs', 'queueLagMs'],
  BatchPoisoned: ['runId', 'batchId', 'profiles'],
};

/** The one place a record becomes a line. */
export function recordLine(record: ConnectorRecord): string {
  return JSON.stringify(record);
}
