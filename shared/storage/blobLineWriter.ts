import { PassThrough } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';

/** 1 MiB blocks, two in flight: enough to keep Azure Storage busy, little enough to keep memory flat. */
const BLOCK_BYTES = 1024 * 1024;
const UPLOADS_IN_FLIGHT = 2;

/** A blob written line by line with backpressure, so a million lines never sit in memory. */
export class BlobLineWriter {
  private readonly stream = new PassThrough();
  private readonly upload: Promise<unknown>;
  private buffered: string[] = [];
  private bufferedBytes = 0;
  lines = 0;

  constructor(container: ContainerClient, blobName: string, contentType: string) {
    this.upload = container.getBlockBlobClient(blobName).uploadStream(this.stream, BLOCK_BYTES, UPLOADS_IN_FLIGHT, {
      blobHTTPHeaders: { blobContentType: contentType },
    });
    // Surface upload failures at close(), not as an unhandled rejection.
    this.upload.catch(() => undefined);
  }

  async writeLine(line: string): Promise<void> {
    this.buffered.push(line, '\n');
    this.bufferedBytes += line.length + 1;
    this.lines += 1;
    if (this.bufferedBytes >= 256 * 1024) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.buffered.length === 0) return;
    const chunk = this.buffered.join('');
    this.buffered = [];
    this.bufferedBytes = 0;
    if (!this.stream.write(chunk)) await new Promise((resolve) => this.stream.once('drain', resolve));
  }

  async close(): Promise<void> {
    await this.flush();
    this.stream.end();
    await this.upload;
  }
}
