import type { QueueClient } from '@azure/storage-queue';
import { gzipText, QUEUE_MESSAGE_MAX_BYTES, type BatchProfile } from './messages';
import { BRAZE_MAX_OBJECTS_PER_REQUEST } from '../brazeApi';
import { sendToQueue } from '../storage/queueSend';

/** Headroom under the 64 KiB limit for the queue's own envelope. */
const TARGET_MESSAGE_BYTES = QUEUE_MESSAGE_MAX_BYTES - 2 * 1024;
/** Many Braze requests per message: Azurite and the queue trigger both pay per message, not per byte. */
const MAX_PROFILES_PER_MESSAGE = BRAZE_MAX_OBJECTS_PER_REQUEST * 40;
const MAX_SENDS_IN_FLIGHT = 16;

export function batchIdOf(sequence: number, prefix = ''): string {
  return `${prefix}${sequence.toString().padStart(7, '0')}`;
}

/**
 * Packs profiles into gzip+base64 queue messages of up to ~62 KiB. The raw-JSON budget adapts to
 * the compression ratio seen so far; a message that still comes out too big is split in two.
 */
export class BatchPacker {
  private profiles: string[] = [];
  private rawBytes = 0;
  private rawBudget = 256 * 1024;
  private sequence = 0;
  private inFlight = new Set<Promise<unknown>>();
  private failure: unknown;
  /** Queue messages sent: each one is a batch with its own id. */
  messages = 0;
  /** Braze requests those messages make when sent (objectsPerRequest objects each). */
  requests = 0;

  constructor(
    /** Where the messages go: a queue, or a staged blob's lines; none for a dry run, which only counts what it would send. */
    private readonly sink: QueueClient | ((text: string) => Promise<void>) | undefined,
    private readonly runId: string,
    /** Keeps the batch ids of different shards of a run apart. */
    private readonly batchPrefix = '',
    /** The workspace's objects per /users/track request, for counting requests. */
    private readonly objectsPerRequest = BRAZE_MAX_OBJECTS_PER_REQUEST,
  ) {}

  /** The id of the batch the next profile will travel in (stable across replays of the same run). */
  get currentBatchId(): string {
    return batchIdOf(this.sequence, this.batchPrefix);
  }

  async add(profile: BatchProfile): Promise<void> {
    const json = JSON.stringify(profile);
    this.profiles.push(json);
    this.rawBytes += json.length + 1;
    if (this.rawBytes >= this.rawBudget || this.profiles.length >= MAX_PROFILES_PER_MESSAGE) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.profiles.length === 0) return;
    const profiles = this.profiles;
    const batchId = batchIdOf(this.sequence, this.batchPrefix);
    this.sequence += 1;
    this.profiles = [];
    this.rawBytes = 0;
    for (const { text, profiles: count } of this.encode(batchId, profiles)) {
      this.requests += Math.ceil(count / this.objectsPerRequest);
      const sink = this.sink;
      if (!sink) {
        this.messages += 1;
        continue;
      }
      while (this.inFlight.size >= MAX_SENDS_IN_FLIGHT) await Promise.race(this.inFlight);
      const send: Promise<unknown> = (typeof sink === 'function' ? sink(text) : sendToQueue(sink, text))
        .catch((error: unknown) => {
          this.failure ??= error;
        })
        .finally(() => this.inFlight.delete(send));
      this.inFlight.add(send);
      if (this.failure) throw this.failure;
      this.messages += 1;
    }
  }

  /** Waits for every message to be accepted by the queue; throws if any send failed. */
  async close(): Promise<void> {
    await this.flush();
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
  }

  private encode(batchId: string, profiles: string[]): { text: string; profiles: number }[] {
    const json = `{"kind":"brazeBatch","runId":${JSON.stringify(this.runId)},"batchId":"${batchId}","deferrals":0,"profiles":[${profiles.join(',')}]}`;
    const text = gzipText(json);
    const rawBytes = json.length;
    // Aim the next message at ~90% of the limit given this ratio.
    this.rawBudget = Math.max(8 * 1024, Math.floor((rawBytes * TARGET_MESSAGE_BYTES * 0.9) / text.length));
    if (text.length <= TARGET_MESSAGE_BYTES) return [{ text, profiles: profiles.length }];
    if (profiles.length === 1) throw new Error(`one profile does not fit a queue message (${text.length} bytes encoded)`);
    const half = Math.ceil(profiles.length / 2);
    return [...this.encode(`${batchId}a`, profiles.slice(0, half)), ...this.encode(`${batchId}b`, profiles.slice(half))];
  }
}
