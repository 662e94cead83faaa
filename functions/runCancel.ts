import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { cancelRun } from '../shared/sync/heldRuns';
import { isRunId } from '../shared/runs/runStore';
import { connector } from './connector';

/** A run the guard held ends with nothing sent; the delivered state stays as it was. */
export async function runCancel(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const outcome = await cancelRun(connector(), runId);
  switch (outcome.kind) {
    case 'notFound':
      return { status: 404, jsonBody: { error: `run ${runId} not found` } };
    case 'refused':
      return { status: 409, jsonBody: { error: outcome.reason } };
    default:
      context.log(`run ${runId} cancelled`);
      return { status: 200, jsonBody: { runId, status: outcome.status } };
  }
}

export const runCancelOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'runs/{id}/cancel',
  handler: runCancel,
};

app.http('runCancel', runCancelOptions);
