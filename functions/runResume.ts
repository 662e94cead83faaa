import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { resumeRun } from '../shared/sync/resumeRun';
import { isRunId } from '../shared/runs/runStore';
import { connector } from './connector';

export async function runResume(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const outcome = await resumeRun(connector(), runId);
  switch (outcome.kind) {
    case 'notFound':
      return { status: 404, jsonBody: { error: `run ${runId} not found` } };
    case 'refused':
      return { status: 409, jsonBody: { error: outcome.reason } };
    case 'resumed': {
      context.log(`run ${runId} resumed: ${outcome.requeuedBatches} batches re-queued`);
      const { kind: _kind, ...body } = outcome;
      return { status: 202, jsonBody: body };
    }
  }
}

export const runResumeOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'runs/{id}/resume',
  handler: runResume,
};

app.http('runResume', runResumeOptions);
