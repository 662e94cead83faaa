import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { z } from 'zod';
import { parseRequestBody, startedRunsAnswer } from './httpAnswers';
import { InvalidInputError } from '../shared/errors';
import { describeProblem, requestSync } from '../shared/sync/startSync';
import { connector } from './connector';

export const syncRequestBodySchema = z.strictObject({
  destination: z.string().min(1).optional(),
  segments: z.array(z.string().min(1)).min(1).optional(),
  force: z.boolean().optional(),
  /** Preview: read, map and diff, send nothing; the report is at GET /api/runs/{id}/preview. */
  dryRun: z.boolean().optional(),
});

export async function syncHttp(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const parsed = parseRequestBody(await request.text(), syncRequestBodySchema);
  if (!parsed.ok) return parsed.answer;
  try {
    const outcome = await requestSync(connector(), { trigger: 'http', ...parsed.body });
    context.log(`sync requested over HTTP: ${outcome.runs.length} runs, ${outcome.problems.length} problems`);
    for (const problem of outcome.problems) context.warn(describeProblem(problem));
    return startedRunsAnswer(outcome);
  } catch (error) {
    if (error instanceof InvalidInputError) return { status: 400, jsonBody: { error: error.message } };
    throw error;
  }
}

/** Function-key auth: the host refuses calls without `x-functions-key` or `?code=`. */
export const syncHttpOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'sync',
  handler: syncHttp,
};

app.http('syncHttp', syncHttpOptions);
