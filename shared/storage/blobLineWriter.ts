import { PassThrough } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';

/** 1 MiB blocks, two in flight: enough to keep Azure Storage busy, little enough to keep memory flat. */
const BLOCK_BYTES = 1024 * 1024;
const UPLOADS_IN_FLIGHT = 2;
const FLUSH_BYTES = 256 * 1024;

/**
 * A blob written line by line with backpressure, so a million lines never sit in memory. The blob
 * appears only when close() commits it; abort() leaves nothing behind. A failed upload fails the
 * next write at once — never a wait for a 'drain' that will not come.
 */
export class BlobLineWriter {
  private readonly stream = new PassThrough();
  private readonly upload: Promise<unknown>;
  private readonly failed: Promise<never>;
  private failure: unknown;
  private buffered: string[] = [];
  private bufferedBytes = 0;
  lines = 0;

  constructor(container: ContainerClient, blobName: string, contentType: string) {
    const aborter = new AbortController();
    this.abortUpload = (reason) => aborter.abort(reason);
    this.upload = container.getBlockBlobClient(blobName).uploadStream(this.stream, BLOCK_BYTES, UPLOADS_IN_FLIGHT, {
      blobHTTPHeaders: { blobContentType: contentType },
      abortSignal: aborter.signal,
    });
    this.failed = this.upload.then(
      () => new Promise<never>(() => undefined),
      (error: unknown) => {
        this.failure ??= error;
        throw error;
      },
    );
    // Reported by the next write or close, not as an unhandled rejection.
    this.failed.catch(() => undefined);
  }

  private readonly abortUpload: (reason: unknown) => void;

  async writeLine(line: string): Promise<void> {
    this.buffered.push(line, '\n');
    this.bufferedBytes += line.length + 1;
    this.lines += 1;
    if (this.bufferedBytes >= FLUSH_BYTES) await this.flush();
  }

  /** Text that already ends in a newline (a part of another report). */
  async write(text: string | Buffer): Promise<void> {
    await this.flush();
    await this.push(text);
  }

  private async flush(): Promise<void> {
    if (this.buffered.length === 0) return;
    const chunk = this.buffered.join('');
    this.buffered = [];
    this.bufferedBytes = 0;
    await this.push(chunk);
  }

  private async push(chunk: string | Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.stream.write(chunk)) return;
    await Promise.race([new Promise((resolve) => this.stream.once('drain', resolve)), this.failed]);
  }

  async close(): Promise<void> {
    await this.flush();
    this.stream.end();
    await this.upload;
  }

  /** Gives up the blob: nothing is committed. */
  async abort(reason: unknown = new Error('writer aborted')): Promise<void> {
    this.abortUpload(reason);
    // With an error, so the upload's reader stops waiting for the rest of the stream.
    this.stream.destroy(reason instanceof Error ? reason : new Error(String(reason)));
    await this.upload.catch(() => undefined);
  }
}
