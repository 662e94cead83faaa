import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { z } from 'zod';
import { parseRequestBody, startedRunsAnswer } from './httpAnswers';
import { InvalidInputError } from '../shared/errors';
import { describeProblem, requestSync } from '../shared/sync/startSync';
import { connector } from './connector';

export const reconcileRequestBodySchema = z.strictObject({
  /** The destination whose Braze segments are compared with Customer Insights (one at a time: each costs a segment export per segment). */
  destination: z.string().min(1),
  segments: z.array(z.string().min(1)).min(1).optional(),
  /** Report the drift, repair nothing. */
  dryRun: z.boolean().optional(),
});

export async function reconcileHttp(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const parsed = parseRequestBody(await request.text(), reconcileRequestBodySchema);
  if (!parsed.ok) return parsed.answer;
  try {
    const outcome = await requestSync(connector(), { trigger: 'http', reconcile: true, ...parsed.body });
    context.log(`reconcile requested over HTTP: ${outcome.runs.length} runs, ${outcome.problems.length} problems`);
    for (const problem of outcome.problems) context.warn(describeProblem(problem));
    return startedRunsAnswer(outcome);
  } catch (error) {
    if (error instanceof InvalidInputError) return { status: 400, jsonBody: { error: error.message } };
    throw error;
  }
}

export const reconcileHttpOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'reconcile',
  handler: reconcileHttp,
};

app.http('reconcileHttp', reconcileHttpOptions);
