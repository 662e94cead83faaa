import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { runSummary } from '../shared/runs/runRecord';
import { connector } from './connector';

const RUN_ID = /^[a-z]-[0-9a-f]{24}(-[0-9a-z]+)?$/;

export async function runStatus(request: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!RUN_ID.test(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const run = await connector().ledger.get(runId);
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
