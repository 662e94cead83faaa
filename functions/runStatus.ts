import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { runSummary } from '../shared/runs/runRecord';
import { isRunId } from '../shared/runs/runStore';
import { connector } from './connector';

export async function runStatus(request: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const run = await connector().runs.get(runId);
  if (!run) return { status: 404, jsonBody: { error: `run ${runId} not found` } };
  return { status: 200, jsonBody: runSummary(run) };
}

export const runStatusOptions: HttpFunctionOptions = {
  methods: ['GET'],
  authLevel: 'function',
  route: 'runs/{id}',
  handler: runStatus,
};

app.http('runStatus', runStatusOptions);
