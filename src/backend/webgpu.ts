/**
 * The WebGPU backend in Node: Google's Dawn (npm `webgpu`, a prebuilt `dawn.node`) under
 * `@tensorflow/tfjs-backend-webgpu`, both optional dependencies. Dawn speaks Vulkan on Linux,
 * Metal on macOS, D3D12 on Windows. This module finds an adapter, says what it is (and whether
 * it is a software rasteriser such as llvmpipe), and registers a tfjs backend whose synchronous
 * reads work in Node (./webgpu-sync.ts) and whose limits fail loudly instead of silently.
 */
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { ResourceError } from '../util/errors.ts';
import { noteKernel, YIELD_EVERY } from './yield.ts';
import { deviceLostError, hookDawnScheduling, mapReadSync, type LossRecord } from './webgpu-sync.ts';

/** The adapter a run used, recorded beside the backend in every result. */
export interface WebGPUAdapter {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (llvmpipe, lavapipe, SwiftShader, WARP): correct, not fast. */
  software: boolean;
  /** The two limits that bound one tensor, in bytes. */
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

const SOFTWARE_NAMES = /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render|\bwarp\b/i;

export const WEBGPU_PACKAGES = 'webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0';
export const VULKAN_HINT =
  'a Vulkan driver: for an NVIDIA GPU the NVIDIA driver\'s Vulkan part (in a container: NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics), ' +
  'for AMD or Intel Mesa\'s mesa-vulkan-drivers; for a software adapter (correct, slow) Mesa ≥ 24\'s mesa-vulkan-drivers ' +
  '(on Debian bookworm from bookworm-backports: sudo scripts/install-vulkan.sh) with --backend webgpu';

let adapterInUse: WebGPUAdapter | null = null;

/** The adapter of the active webgpu backend, or null on every other backend. */
export function webgpuAdapter(): WebGPUAdapter | null {
  return tf.getBackend() === 'webgpu' ? adapterInUse : null;
}

/** One line for logs and result fields: `NVIDIA ampere (NVIDIA A100)`, `mesa software (llvmpipe …) [software]`. */
export function describeAdapter(a: WebGPUAdapter): string {
  const name = [a.vendor, a.architecture].filter((s) => s !== '').join(' ') || 'unknown adapter';
  const detail = a.description || a.device;
  return `${name}${detail ? ` (${detail})` : ''}${a.software ? ' [software]' : ''}`;
}

type DawnModule = typeof import('webgpu');

/** Whether a hardware adapter is possible: on Linux a GPU's device node must exist. */
function gpuDeviceNodes(): boolean {
  if (process.platform !== 'linux') return true;
  const any = (dir: string, name: RegExp) => {
    try {
      return fs.readdirSync(dir).some((f) => name.test(f));
    } catch {
      return false;
    }
  };
  return any('/dev/dri', /^renderD\d+$/) || any('/dev', /^nvidia\d+$/);
}

async function importDawn(): Promise<DawnModule | string> {
  try {
    return await import('webgpu');
  } catch (e) {
    return `the optional package 'webgpu' (Dawn for Node) is not installed or does not load here ` +
      `(${e instanceof Error ? e.message.split('\n')[0] : String(e)}); install it with npm install ${WEBGPU_PACKAGES}`;
  }
}

function adapterOf(adapter: GPUAdapter): WebGPUAdapter {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const described = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return {
    vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
    software: info.isFallbackAdapter === true || info.architecture === 'software' || SOFTWARE_NAMES.test(described),
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
  };
}

/**
 * Load the webgpu backend. `explicit`: the user asked for it, so a software adapter is used
 * (and failures say what to install); otherwise (`auto`) only a hardware adapter is taken.
 * Returns the adapter, or why not.
 */
export async function loadWebGPU(explicit: boolean): Promise<WebGPUAdapter | string> {
  // `auto` on a Linux machine without a GPU device: skip Dawn (its start-up logs Vulkan warnings).
  if (!explicit && !gpuDeviceNodes()) return 'no GPU device (/dev/dri/renderD*, /dev/nvidia*)';
  const dawn = await importDawn();
  if (typeof dawn === 'string') return dawn;
  hookDawnScheduling();
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter === null) {
    return `no WebGPU adapter found (Dawn saw no usable Vulkan/Metal/D3D12 device); install ${VULKAN_HINT}`;
  }
  const found = adapterOf(adapter);
  if (found.software && !explicit) return `only a software adapter (${describeAdapter(found)}); use --backend webgpu to run on it anyway`;
  const backendModule = await import('@tensorflow/tfjs-backend-webgpu');
  const device = await adapter.requestDevice({
    requiredFeatures: adapter.features.has('timestamp-query') ? ['timestamp-query'] : [],
    // The adapter's own limits, not WebGPU's defaults (128 MiB buffers): tfjs asks the same.
    requiredLimits: {
      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: adapter.limits.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
      maxComputeWorkgroupSizeX: adapter.limits.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
    },
  });
  chunkAddN(device.limits.maxStorageBuffersPerShaderStage - 1);
  exposeGpu(gpu); // tfjs's backend checks navigator.gpu
  const backend = nodeBackend(backendModule.WebGPUBackend, device, adapter.info, found);
  tf.registerBackend('webgpu', () => backend, 3);
  if (!(await tf.setBackend('webgpu'))) return 'the tfjs webgpu backend did not initialise on this adapter';
  adapterInUse = found;
  return found;
}

/** `navigator.gpu` as in a browser (Node 20 has no navigator; Node 21+ has one without gpu). */
function exposeGpu(gpu: GPU): void {
  const g = globalThis as { navigator?: object };
  if (g.navigator === undefined) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  Object.defineProperty(g.navigator!, 'gpu', { value: gpu, configurable: true, writable: true });
}

let addNChunked = false;

/**
 * tfjs-webgpu's AddN binds every input as a storage buffer in one shader, so summing more
 * tensors than the device's per-stage limit (8 by default; a LoRA step's gradient norm sums
 * dozens) fails validation. Sum in chunks of at most `maxInputs`, then sum the partial sums.
 */
function chunkAddN(maxInputs: number): void {
  if (addNChunked) return;
  addNChunked = true;
  const original = tf.getKernel('AddN', 'webgpu')!.kernelFunc;
  const sum = (inputs: tf.TensorInfo[], args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo => {
    if (inputs.length <= maxInputs) return original({ ...args, inputs: inputs as unknown as tf.NamedTensorInfoMap }) as tf.TensorInfo;
    const partial: tf.TensorInfo[] = [];
    for (let i = 0; i < inputs.length; i += maxInputs) partial.push(sum(inputs.slice(i, i + maxInputs), args));
    const out = sum(partial, args);
    for (const p of partial) (args.backend as tf.KernelBackend).disposeData(p.dataId);
    return out;
  };
  tf.unregisterKernel('AddN', 'webgpu');
  tf.registerKernel({ kernelName: 'AddN', backendName: 'webgpu', kernelFunc: (args) => sum(args.inputs as unknown as tf.TensorInfo[], args) });
}

type WebGPUBackendClass = typeof import('@tensorflow/tfjs-backend-webgpu').WebGPUBackend;
type BackendValues = ReturnType<InstanceType<WebGPUBackendClass>['readSync']>;

/** The pieces of tfjs-webgpu's backend a synchronous read needs (`commandEncoder` is private there). */
interface Internals {
  commandEncoder: GPUCommandEncoder;
}

/**
 * tfjs's WebGPUBackend with Node-ready synchronous reads, buffers checked against the adapter's
 * limits before they are made, and a lost device or a GPU validation error turned into a
 * clear error at the next read instead of zeros.
 */
function nodeBackend(Base: WebGPUBackendClass, device: GPUDevice, info: GPUAdapterInfo, adapter: WebGPUAdapter): InstanceType<WebGPUBackendClass> {
  let loss: LossRecord | null = null;
  let gpuError: string | null = null;
  void device.lost.then((l) => { loss = { reason: l.reason, message: l.message }; });
  device.onuncapturederror = (e) => { gpuError ??= e.error.message; };
  const check = () => {
    if (loss !== null && loss.reason !== 'destroyed') throw deviceLostError(loss);
    if (gpuError !== null) {
      throw new ResourceError(`the WebGPU device reported an error, so the results cannot be trusted: ${gpuError.trim()} ` +
        `(adapter ${describeAdapter(adapter)}). Run with --backend wasm, or report this with the command line.`);
    }
  };

  class NodeWebGPUBackend extends Base {
    override readSync(dataId: object): BackendValues {
      const data = this.tensorMap.get(dataId);
      const resource = data.resource;
      if (data.values != null || data.dtype === 'complex64' || !(resource instanceof GPUBuffer)) return super.readSync(dataId);
      check();
      const staging = this.bufferManager.acquireBuffer(resource.size, GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ);
      this.ensureCommandEncoderReady();
      this.endComputePassEncoder();
      (this as unknown as Internals).commandEncoder.copyBufferToBuffer(resource, 0, staging, 0, resource.size);
      this.submitQueue();
      const bytes = mapReadSync(staging, () => loss);
      this.bufferManager.releaseBuffer(staging);
      check();
      data.values = tf.util.convertBackendValuesAndArrayBuffer(bytes, data.dtype);
      return data.values;
    }

    override async read(dataId: object): Promise<BackendValues> {
      check();
      try {
        return await super.read(dataId);
      } catch (e) {
        check();
        throw e;
      }
    }
  }

  countBindGroups(device, adapter);
  const backend = new NodeWebGPUBackend(device, info);
  const acquire = backend.bufferManager.acquireBuffer.bind(backend.bufferManager);
  backend.bufferManager.acquireBuffer = (size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean) => {
    const storage = (usage & GPUBufferUsage.STORAGE) !== 0;
    const limit = storage ? Math.min(adapter.maxStorageBufferBindingSize, adapter.maxBufferSize) : adapter.maxBufferSize;
    if (size > limit) throw bufferLimitError('a tensor computed during the run', size, adapter);
    return acquire(size, usage, mappedAtCreation, reuse);
  };
  capFreeBuffers(backend.bufferManager);
  return backend;
}

/**
 * Bind groups a software adapter may create between two turns of the event loop. Node runs
 * dawn.node's finalizers (which free each GPU object) only when the event loop turns; the long
 * loops yield (./yield.ts) every few thousand kernels, but a loop that does not would keep every
 * dispatch's bind group alive. On llvmpipe each holds one memory mapping, and at the kernel's
 * vm.max_map_count (65,530) the driver crashes (SIGSEGV): measured at 63,194 bind groups, 191
 * tokens into stories260K's KV-cache decoding before the loops yielded. A last resort: stop
 * before that with a clear error instead.
 */
const SOFTWARE_BIND_GROUPS_PER_TURN = 50_000;

/** Count every dispatch for the yielding loops; on a software adapter refuse to go past the limit. */
function countBindGroups(device: GPUDevice, adapter: WebGPUAdapter): void {
  const create = device.createBindGroup.bind(device);
  device.createBindGroup = (descriptor: GPUBindGroupDescriptor) => {
    if (noteKernel() > SOFTWARE_BIND_GROUPS_PER_TURN && adapter.software) {
      throw new ResourceError(
        `this computation dispatched more than ${SOFTWARE_BIND_GROUPS_PER_TURN.toLocaleString('en-US')} GPU kernels without a pause, ` +
          `the most the software adapter ${describeAdapter(adapter)} survives: Node frees WebGPU objects only between event-loop turns, ` +
          'and the driver runs out of memory mappings (vm.max_map_count) before that. PruneLab\'s long loops pause once ' +
          `${YIELD_EVERY.toLocaleString('en-US')} kernels have piled up, so one step of this command dispatches that many on its own ` +
          'or a loop does not pause: please report the command line. Meanwhile use smaller steps (--seqlen, --nsamples, --batch-size) or --backend wasm, ' +
          'which is faster on a CPU anyway.');
    }
    return create(descriptor);
  };
}

/** Free buffers tfjs may keep for reuse; past this the pool is emptied (see capFreeBuffers). */
const MAX_FREE_BUFFERS = 1024;

/** The parts of tfjs-webgpu's BufferManager the cap touches (private in its typings). */
interface BufferPool {
  freeBuffers: Map<string, GPUBuffer[]>;
  numFreeBuffers: number;
  numBytesAllocated: number;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

/**
 * tfjs-webgpu keeps every released buffer for reuse by exact size and never frees one. Decoding
 * with a KV cache makes new sizes at every step, so the pool grows without bound: on llvmpipe the
 * process died (SIGSEGV) near 4,700 free buffers, 190 tokens into stories260K's generation.
 * Empty the pool whenever it holds more than MAX_FREE_BUFFERS (buffers in use are untouched).
 */
function capFreeBuffers(manager: unknown): void {
  const pool = manager as BufferPool;
  const release = pool.releaseBuffer.bind(pool);
  pool.releaseBuffer = (buffer: GPUBuffer, reuse = true) => {
    release(buffer, reuse);
    if (pool.numFreeBuffers <= MAX_FREE_BUFFERS) return;
    for (const buffers of pool.freeBuffers.values()) {
      for (const b of buffers) {
        pool.numBytesAllocated -= b.size;
        b.destroy();
      }
      buffers.length = 0;
    }
    pool.numFreeBuffers = 0;
  };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** The limit one tensor meets on this adapter, named. */
function tensorLimit(adapter: WebGPUAdapter): { bytes: number; name: string } {
  return adapter.maxStorageBufferBindingSize <= adapter.maxBufferSize
    ? { bytes: adapter.maxStorageBufferBindingSize, name: 'maxStorageBufferBindingSize' }
    : { bytes: adapter.maxBufferSize, name: 'maxBufferSize' };
}

export function bufferLimitError(what: string, bytes: number, adapter: WebGPUAdapter): ResourceError {
  const limit = tensorLimit(adapter);
  return new ResourceError(
    `${what} needs one WebGPU buffer of ${mib(bytes)}, but this adapter (${describeAdapter(adapter)}) allows at most ` +
      `${mib(limit.bytes)} per buffer (its ${limit.name}). Options: a GPU whose ${limit.name} is larger, ` +
      `a smaller --seqlen or batch where the tensor is an activation, or --backend wasm / node.`);
}

/**
 * Refuse up front, from the checkpoint's headers, a model whose largest tensor (as fp32) cannot
 * be one WebGPU buffer: nothing is loaded yet. No-op on other backends.
 */
export function assertTensorsFitWebGPU(tensors: ReadonlyMap<string, { shape: readonly number[] }>, source: string): void {
  const adapter = webgpuAdapter();
  if (adapter === null) return;
  for (const [name, ref] of tensors) {
    const bytes = 4 * ref.shape.reduce((a, b) => a * b, 1);
    if (bytes > tensorLimit(adapter).bytes) {
      throw new ResourceError(bufferLimitError(`the model's tensor ${name} [${ref.shape.join(', ')}] (fp32)`, bytes, adapter).message, source);
    }
  }
}
