import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { approveRun } from '../shared/sync/heldRuns';
import { isRunId } from '../shared/runs/runStore';
import { connector } from './connector';

/** A run the guard held sends exactly what it previewed. */
export async function runApprove(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const outcome = await approveRun(connector(), runId);
  switch (outcome.kind) {
    case 'notFound':
      return { status: 404, jsonBody: { error: `run ${runId} not found` } };
    case 'refused':
      return { status: 409, jsonBody: { error: outcome.reason } };
    default:
      context.log(`run ${runId} approved`);
      return { status: 202, jsonBody: { runId, status: outcome.status } };
  }
}

export const runApproveOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'runs/{id}/approve',
  handler: runApprove,
};

app.http('runApprove', runApproveOptions);
