import type { CommandModule } from 'yargs';
import { describeOptions, listMethods } from '../../prune/registry.ts';
import { displayNameOf } from '../../prune/method.ts';
import { emit, handler, withCommon, type CommonArgs } from '../common.ts';

export const methodsCommand: CommandModule<object, CommonArgs> = {
  command: 'methods',
  describe: 'list the pruning methods: granularity, options, recovery schedules and presets',
  builder: (y) => withCommon(y),
  handler: handler<CommonArgs>(async (args) => {
    const methods = (await listMethods()).map((m) => ({
      name: m.name, displayName: displayNameOf(m), description: m.description, granularity: m.granularity, kind: m.kind,
      targetScope: m.targetScope ?? null, reference: m.reference, options: describeOptions(m),
      recoverySchedule: m.recovery?.description ?? null, recoveryPreset: m.recoveryRecipe?.description ?? null,
    }));
    emit(args, { methods }, () => methods.map((m) =>
      `${m.name.padEnd(14)} [${m.granularity.join(', ')}] ${m.description}\n`
      + (m.recoverySchedule ? `    recovery schedule (--schedule ${m.name}): ${m.recoverySchedule}\n` : '')
      + (m.recoveryPreset ? `    recovery preset (--preset ${m.name}): ${m.recoveryPreset}\n` : '')
      + Object.entries(m.options).map(([k, o]) => `    ${k} = ${JSON.stringify(o.default)}${o.description ? `  (${o.description})` : ''}`).join('\n'),
    ).join('\n'));
  }),
};
