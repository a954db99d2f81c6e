// wtgate.d.ts stays in step with wtgate.js: a typed usage example compiles, and the
// declared exports and class members are the ones the module really has.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import * as wtgate from '../wtgate.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const dts = readFileSync(new URL('../wtgate.d.ts', import.meta.url), 'utf8');

test('the typed usage example compiles (tsc --noEmit)', () => {
  const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
  const run = spawnSync(process.execPath, [tsc, '-p', 'tests/types/tsconfig.json'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(run.error, undefined, `cannot run tsc (npm install in web-client): ${run.error?.message}`);
  assert.equal(run.status, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});

test('declared value exports are the module\'s exports', () => {
  const declared = [...dts.matchAll(/^export (?:const|function|class) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(wtgate).sort());
});

/** The members declared in the body of `export class NAME { … }`. */
function declaredMembers(name) {
  const body = new RegExp(`^export class ${name} \\{\\n([\\s\\S]*?)^\\}`, 'm').exec(dts)?.[1];
  assert.ok(body, `class ${name} in wtgate.d.ts`);
  return new Set([...body.matchAll(/^ {2}(?:readonly |private )?(\w+)[?(<:]/gm)].map((m) => m[1]));
}

for (const name of ['Room', 'Client']) {
  test(`${name}: every public method and getter is declared, and exists`, () => {
    const declared = declaredMembers(name);
    const proto = wtgate[name].prototype;
    const inherited = ['on', 'once', 'off', 'emit'];
    const runtime = Object.getOwnPropertyNames(proto).filter((p) => p !== 'constructor' && !p.startsWith('_'));
    for (const member of runtime) assert.ok(declared.has(member), `${name}.${member} is not in wtgate.d.ts`);
    for (const member of declared) {
      if (member === 'constructor') continue;
      const onProto = member in proto || inherited.includes(member);
      const isField = new RegExp(`^ {2}readonly ${member}[?]?:`, 'm').test(dts);
      assert.ok(onProto || isField, `${name}.${member} is declared but wtgate.js has no such method or getter`);
    }
    for (const method of ['on', 'once', 'off']) assert.equal(typeof proto[method], 'function');
  });
}

test('error codes and constants match', () => {
  for (const [name, code] of Object.entries(wtgate.ErrorCode)) {
    assert.match(dts, new RegExp(`^ {2}${name}: ${code};$`, 'm'), `ErrorCode.${name}`);
  }
  assert.match(dts, new RegExp(`MAX_VOLATILE_BODY: ${wtgate.MAX_VOLATILE_BODY};`));
  assert.match(dts, new RegExp(`PROTOCOL_VERSION: ${wtgate.PROTOCOL_VERSION};`));
});
