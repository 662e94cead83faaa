import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { cancelRun } from '../shared/sync/heldRuns';
import { isRunId } from '../shared/runs/runStore';
import { connector } from './connector';
import { heldRunAnswer } from './httpAnswers';

/** A run the guard held ends with nothing sent; the delivered state stays as it was. */
export async function runCancel(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const outcome = await cancelRun(connector(), runId);
  if (outcome.kind === 'cancelled') context.log(`run ${runId} cancelled`);
  return heldRunAnswer(runId, outcome, 200);
}

export const runCancelOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'runs/{id}/cancel',
  handler: runCancel,
};

app.http('runCancel', runCancelOptions);
