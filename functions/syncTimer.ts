import { app, type InvocationContext, type Timer } from '@azure/functions';
import { describeProblem, requestSync } from '../shared/sync/startSync';
import { sweepRuns } from '../shared/sync/sweepRuns';
import { connector } from './connector';

export async function syncTimer(timer: Timer, context: InvocationContext): Promise<void> {
  const deps = connector();
  if (timer.isPastDue) context.warn('timer is past due; syncing whatever refresh is newest now');
  const outcome = await requestSync(deps, { trigger: 'timer' });
  const swept = await sweepRuns(deps);
  context.log(
    `timer: ${outcome.runs.filter((r) => r.created).length} new runs, ${outcome.runs.filter((r) => !r.created).length} refreshes already synced or syncing, ${outcome.problems.length} problems; restarted ${swept.restarted.length} and finalized ${swept.finalizing.length} runs a crash left behind; removed ${swept.expired.length} runs past their retention; sent what ${swept.notified.length} runs owed (records, notifications)`,
  );
  for (const problem of outcome.problems) context.warn(describeProblem(problem));
  for (const stalled of swept.stalled) {
    context.warn(
      `run ${stalled.runId} stalled: no batch ended for ${stalled.quietMinutes} minutes; POST /api/runs/${stalled.runId}/resume, or a newer refresh supersedes it`,
    );
  }
}

app.timer('syncTimer', {
  schedule: '%SYNC_SCHEDULE%',
  runOnStartup: false,
  handler: syncTimer,
});
