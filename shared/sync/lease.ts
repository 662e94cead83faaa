import type { RunRecord } from '../runs/runRecord';
import type { ConnectorDeps } from './deps';

/**
 * A run's enqueuer or finalizer holds it until `leaseUntil`, renewing while it works; once that
 * time has passed, another worker may assume it crashed and take over.
 */
export function leaseEnd(deps: ConnectorDeps): string {
  return new Date(deps.clock.now() + deps.settings.enqueueLeaseMs).toISOString();
}

export function leaseHeld(run: Pick<RunRecord, 'leaseUntil'>, nowMs: number): boolean {
  return run.leaseUntil !== undefined && Date.parse(run.leaseUntil) > nowMs;
}
