/**
 * Host-side tensor data as read from or written to checkpoint files: always fp32 in memory,
 * shapes as in the file (linear weights `[out, in]`, HF convention).
 */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** A checkpoint's tensors by HF name. */
export type NamedTensors = Map<string, HostTensor>;

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
