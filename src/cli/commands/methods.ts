import type { CommandModule } from 'yargs';
import { describeOptions, listMethods } from '../../prune/registry.ts';
import { emit, handler, withCommon, type CommonArgs } from '../common.ts';

export const methodsCommand: CommandModule<object, CommonArgs> = {
  command: 'methods',
  describe: 'list the pruning methods with their granularity and options',
  builder: (y) => withCommon(y),
  handler: handler<CommonArgs>(async (args) => {
    const methods = (await listMethods()).map((m) => ({
      name: m.name, description: m.description, granularity: m.granularity, kind: m.kind, reference: m.reference,
      options: describeOptions(m),
    }));
    emit(args, { methods }, () => methods.map((m) =>
      `${m.name.padEnd(14)} [${m.granularity.join(', ')}] ${m.description}\n`
      + Object.entries(m.options).map(([k, o]) => `    ${k} = ${JSON.stringify(o.default)}${o.description ? `  (${o.description})` : ''}`).join('\n'),
    ).join('\n'));
  }),
};
