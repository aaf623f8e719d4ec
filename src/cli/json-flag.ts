/**
 * Whether a command line asks for `--json`, read from the raw arguments: needed where yargs has
 * not parsed them (argument errors) or is not loaded at all (the supervisor). The last spelling
 * wins, as in yargs.
 */
export function wantsJson(argv: readonly string[]): boolean {
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    if (a === '--json') json = argv[i + 1] !== 'false';
    else if (a === '--json=true') json = true;
    else if (a === '--no-json' || a === '--json=false') json = false;
  }
  return json;
}
