import { describeError, LeaseLostError } from '../errors';
import type { RunRecord } from '../runs/runRecord';
import type { RunPatch } from '../runs/runStore';
import type { UnitKind } from '../runs/unitLedger';
import type { ConnectorDeps } from '../runs/connectorDeps';

/**
 * A run's enqueuer or finalizer holds it until `leaseUntil`, renewing while it works; once that
 * time has passed, another worker may assume it crashed and take over.
 */
export function leaseEnd(deps: ConnectorDeps): string {
  return new Date(deps.clock.now() + deps.settings.leaseMs).toISOString();
}

export function leaseHeld(run: Pick<RunRecord, 'leaseUntil'>, nowMs: number): boolean {
  return run.leaseUntil !== undefined && Date.parse(run.leaseUntil) > nowMs;
}

/**
 * Runs `work` while renewing the lease `owner` holds on the run, every third of the lease. The
 * work's signal aborts as soon as the lease is lost: another worker holds it now, the run ended,
 * or renewals kept failing until the lease ran out (then another worker may already have taken
 * over). The work checks the signal and stops; it must not write its results after that.
 */
export async function holdingLease<T>(
  deps: ConnectorDeps,
  runId: string,
  owner: string,
  work: (signal: AbortSignal) => Promise<T>,
  /** Fields written with each renewal: how far the work has come, for the status API. */
  progress: () => RunPatch = () => ({}),
): Promise<T> {
  return whileRenewed(
    deps,
    `run ${runId}: the lease`,
    async (untilMs) => {
      const until = new Date(untilMs).toISOString();
      const { changed, run } = await deps.runs.update(runId, (current) =>
        current.leaseOwner === owner && current.status !== 'failed' && current.status !== 'superseded' ? { ...progress(), leaseUntil: until } : undefined,
      );
      return changed ? undefined : `was lost (${run.leaseOwner ? 'another worker holds it' : `the run is ${run.status}`})`;
    },
    work,
  );
}

/**
 * Runs a map or shard step while renewing its unit's claim, like holdingLease does for the run:
 * the step's signal aborts when the claim was taken over or could not be renewed before it ran out.
 */
export async function holdingUnit<T>(
  deps: ConnectorDeps,
  runId: string,
  kind: UnitKind,
  index: number,
  owner: string,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  return whileRenewed(
    deps,
    `run ${runId}: the claim on ${kind} ${index}`,
    async () => ((await deps.units.renew(runId, kind, index, owner, deps.settings.leaseMs)) ? undefined : 'was taken over by another worker'),
    work,
  );
}

/**
 * The one renewal loop of leases and claims: renew every third of the hold, abort the work's
 * signal when a renewal says the hold is lost (`renewOnce` answers why) or when the hold runs out
 * while renewals fail — a renewal stuck on unreachable storage must not keep the work going.
 */
async function whileRenewed<T>(
  deps: ConnectorDeps,
  what: string,
  renewOnce: (untilMs: number) => Promise<string | undefined>,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const holdMs = deps.settings.leaseMs;
  let heldUntilMs = deps.clock.now() + holdMs;
  let renewing = false;
  const renew = async () => {
    if (renewing || controller.signal.aborted) return;
    renewing = true;
    try {
      const until = deps.clock.now() + holdMs;
      const lost = await renewOnce(until);
      if (lost === undefined) heldUntilMs = until;
      else controller.abort(new LeaseLostError(`${what} ${lost}`));
    } catch (error) {
      if (deps.clock.now() >= heldUntilMs) controller.abort(new LeaseLostError(`${what} ran out while it could not be renewed: ${describeError(error)}`));
      else deps.log.warn(`${what}: renewal failed, will retry: ${describeError(error)}`);
    } finally {
      renewing = false;
    }
  };
  const timer = setInterval(
    () => {
      if (deps.clock.now() >= heldUntilMs) controller.abort(new LeaseLostError(`${what} ran out before it could be renewed`));
      else void renew();
    },
    Math.max(100, Math.floor(holdMs / 3)),
  );
  try {
    const result = await work(controller.signal);
    controller.signal.throwIfAborted();
    return result;
  } catch (error) {
    if (controller.signal.aborted) throw controller.signal.reason;
    throw error;
  } finally {
    clearInterval(timer);
  }
}
