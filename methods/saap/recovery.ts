/**
 * What SAAP's recovery step (saap.md §6, QA-LoRA reading; built in `src/finetune/`) uses by
 * default: a group-wise INT4 fake-quantised frozen base (group size 32, asymmetric) with a
 * LoRA of rank 8, α 16, dropout 0.05, merged afterwards.
 */
export interface SaapRecoveryDefaults {
  /** `int4`: group-wise 4-bit fake quantisation of the base; `none` is the plain-LoRA ablation. */
  readonly quant: 'int4' | 'none';
  readonly groupSize: number;
  readonly rank: number;
  readonly alpha: number;
  readonly dropout: number;
}

export const saapRecoveryDefaults: SaapRecoveryDefaults = Object.freeze({ quant: 'int4', groupSize: 32, rank: 8, alpha: 16, dropout: 0.05 });
