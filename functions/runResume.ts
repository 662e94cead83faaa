import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { InvalidInputError } from '../shared/errors';
import { resumeRun } from '../shared/sync/resumeRun';
import { isRunId } from '../shared/runs/runLedger';
import { connector } from './connector';

export async function runResume(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  try {
    const outcome = await resumeRun(connector(), runId);
    context.log(`run ${runId} resumed: ${outcome.requeuedBatches} batches re-queued`);
    return { status: 202, jsonBody: outcome };
  } catch (error) {
    if (error instanceof InvalidInputError) return { status: /does not exist/.test(error.message) ? 404 : 409, jsonBody: { error: error.message } };
    throw error;
  }
}

export const runResumeOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'runs/{id}/resume',
  handler: runResume,
};

app.http('runResume', runResumeOptions);
