import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { isRunId } from '../shared/runs/runStore';
import { openRejectsReport } from '../shared/sync/runHistory';
import { connector } from './connector';

/** The run's rejects report, streamed from the state container: an operator needs no storage access. */
export async function runRejects(request: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const report = await openRejectsReport(connector(), runId);
  if (report.kind === 'none') return { status: 404, jsonBody: { error: report.reason } };
  return {
    status: 200,
    headers: {
      'Content-Type': 'text/csv; charset=utf-8',
      'Content-Disposition': `attachment; filename="${runId}-rejects.csv"`,
      ...(report.bytes !== undefined ? { 'Content-Length': String(report.bytes) } : {}),
    },
    body: report.stream as unknown as AsyncIterable<Uint8Array>,
  };
}

export const runRejectsOptions: HttpFunctionOptions = {
  methods: ['GET'],
  authLevel: 'function',
  route: 'runs/{id}/rejects',
  handler: runRejects,
};

app.http('runRejects', runRejectsOptions);
