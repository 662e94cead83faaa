import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { approveRun } from '../shared/sync/heldRuns';
import { isRunId } from '../shared/runs/runStore';
import { connector } from './connector';
import { heldRunAnswer } from './httpAnswers';

/** A run the guard held sends exactly what it previewed. */
export async function runApprove(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const outcome = await approveRun(connector(), runId);
  if (outcome.kind === 'approved') context.log(`run ${runId} approved`);
  return heldRunAnswer(runId, outcome, 202);
}

export const runApproveOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'runs/{id}/approve',
  handler: runApprove,
};

app.http('runApprove', runApproveOptions);
