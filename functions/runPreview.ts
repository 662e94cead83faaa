import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { isRunId } from '../shared/runs/runStore';
import { readPreview } from '../shared/sync/runHistory';
import { connector } from './connector';

/** A dry run's preview: what a real run would change in Braze, and what it would cost. */
export async function runPreview(request: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const runId = request.params.id ?? '';
  if (!isRunId(runId)) return { status: 400, jsonBody: { error: 'run id is malformed' } };
  const found = await readPreview(connector(), runId);
  if (found.kind === 'none') return { status: 404, jsonBody: { error: found.reason } };
  return { status: 200, jsonBody: found.preview };
}

export const runPreviewOptions: HttpFunctionOptions = {
  methods: ['GET'],
  authLevel: 'function',
  route: 'runs/{id}/preview',
  handler: runPreview,
};

app.http('runPreview', runPreviewOptions);
