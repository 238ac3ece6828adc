import type { Command, Option } from 'commander';
import { cell, code, generatedNotice, prose, table } from './markdown.js';

/** Commands in the order the program declares them, depth first, each with its full name. */
export function walkCommands(cmd: Command, prefix: string[] = []): { path: string[]; command: Command }[] {
  const out: { path: string[]; command: Command }[] = [];
  for (const sub of cmd.commands) {
    const path = [...prefix, sub.name()];
    out.push({ path, command: sub }, ...walkCommands(sub, path));
  }
  return out;
}

const usage = (path: string[], command: Command): string => {
  const args = command.registeredArguments.map((a) => (a.required ? `<${a.name()}${a.variadic ? '...' : ''}>` : `[${a.name()}${a.variadic ? '...' : ''}]`));
  return ['cortexcast', ...path, ...args, ...(command.options.length ? ['[options]'] : []), ...(command.commands.length ? ['<command>'] : [])].join(' ');
};

/** What commander would print as the option's default, or '' where the program sets none. */
function defaultOf(o: Option): string {
  if (o.defaultValueDescription) return o.defaultValueDescription;
  if (o.defaultValue === undefined) return '';
  // A boolean default only says the flag is off (or, for --no-x, on): the flag's name already tells it.
  if (typeof o.defaultValue === 'boolean') return '';
  return Array.isArray(o.defaultValue) ? o.defaultValue.join(', ') : String(o.defaultValue);
}

function optionRows(command: Command): string[][] {
  return command.options.map((o) => {
    const choices = o.argChoices ? o.argChoices.map(code).join(', ') : '';
    const req = o.mandatory ? ' (required)' : '';
    const d = defaultOf(o);
    return [code(o.flags), cell(o.description + req), choices, d ? code(d) : ''];
  });
}

/** GitHub's heading anchor of the command's section (its heading is the command's full name). */
const anchor = (path: string[]): string => path.join('-');

/** docs/reference/cli.md: every command and subcommand of `program`, its description and every flag. */
export function renderCliReference(program: Command): string {
  const commands = walkCommands(program);
  const parts = [
    generatedNotice('the command-line program in src/cli.ts'),
    '',
    '# Command-line reference',
    '',
    prose(program.description()),
    '',
    'Run `cortexcast <command> --help` for the same text in a terminal. Durations (`--budget` and the like) take `90s`, `30m`, `2h`, `1h30m` or plain seconds. Options without a default in the table are unset unless given; where such an option\'s description names a default, the command chooses it (it can depend on other options, such as `--recipe`).',
    '',
    ...(program.options.length ? ['## Options of every command', '', 'Given before the command name: `cortexcast [options] <command> ...`.', '', table(['Flag', 'Description', 'Choices', 'Default'], optionRows(program)), ''] : []),
    '## Commands',
    '',
    ...commands.map(({ path, command }) => `${'  '.repeat(path.length - 1)}- [\`${path.join(' ')}\`](#${anchor(path)}): ${cell(command.description())}`),
  ];
  for (const { path, command } of commands) {
    parts.push('', `${path.length === 1 ? '##' : '###'} ${path.join(' ')}`, '', prose(command.description()), '', '```', usage(path, command), '```');
    if (command.options.length) parts.push('', table(['Flag', 'Description', 'Choices', 'Default'], optionRows(command)));
    if (command.commands.length) parts.push('', `Subcommands: ${command.commands.map((c) => `[\`${c.name()}\`](#${anchor([...path, c.name()])})`).join(', ')}.`);
  }
  return parts.join('\n') + '\n';
}
