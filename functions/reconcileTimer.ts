import { app, type InvocationContext, type Timer } from '@azure/functions';
import { describeProblem, requestSync } from '../shared/sync/startSync';
import { connector } from './connector';

/** Every configured destination, compared with Braze and repaired; only registered when RECONCILE_SCHEDULE is set. */
export async function reconcileTimer(timer: Timer, context: InvocationContext): Promise<void> {
  const outcome = await requestSync(connector(), { trigger: 'timer', reconcile: true });
  context.log(`reconcile timer: ${outcome.runs.length} reconciles started, ${outcome.problems.length} problems`);
  for (const problem of outcome.problems) context.warn(describeProblem(problem));
}

// Off by default: a reconcile exports every segment from Braze, which takes a while and counts
// against the export endpoint's limit, so it runs only where the user asks for it.
// Blank is unset, as the settings read it.
if (process.env.RECONCILE_SCHEDULE?.trim()) {
  app.timer('reconcileTimer', {
    schedule: '%RECONCILE_SCHEDULE%',
    runOnStartup: false,
    handler: reconcileTimer,
  });
}
