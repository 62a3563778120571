#!/usr/bin/env node
// pslint: parse PowerShell files with tree-sitter (web-tree-sitter and
// tree-sitter-powershell's WebAssembly grammar) and report every syntax
// error: ERROR nodes (text the grammar cannot place) and MISSING nodes
// (a token the parser had to invent, such as an unclosed brace).
// Usage: node pslint.cjs FILE...
// Exit status 1 when any file has one, 2 when pslint itself fails. Each
// report is FILE:LINE:COLUMN: message, LINE and COLUMN 1-based.
// A FILE ending in .tmpl is a Go template (scripts/windows/*.ps1.tmpl),
// read as PowerShell: {{ps ...}} becomes a quoted string and every other
// action nothing, keeping the lines where they are, so that an error is
// reported at the template's own line.
// Loading the grammar costs seconds (V8 compiles its WebAssembly): give
// every file to one run.
'use strict';

const fs = require('fs');
const path = require('path');
const { Parser, Language } = require('web-tree-sitter');

function problems(node, out) {
  if (node.isMissing) {
    out.push({ node, what: `missing ${node.type}` });
  } else if (node.isError) {
    out.push({ node, what: 'syntax error' });
  }
  if (!node.hasError) {
    return out;
  }
  for (const child of node.children) {
    problems(child, out);
  }
  return out;
}

// asPowerShell turns a Go template into PowerShell with the same lines.
function asPowerShell(src) {
  return src.replace(/\{\{-?\s*(ps\b)?[^}]*?-?\}\}/g, (action, ps) => (ps ? "'value'" : ''));
}

async function main(files) {
  if (files.length === 0) {
    console.error('usage: node pslint.cjs FILE...');
    return 2;
  }
  await Parser.init();
  const grammar = path.join(path.dirname(require.resolve('tree-sitter-powershell/package.json')), 'tree-sitter-powershell.wasm');
  const lang = await Language.load(grammar);
  const parser = new Parser();
  parser.setLanguage(lang);
  let bad = 0;
  for (const file of files) {
    // The byte order mark Windows PowerShell needs is not PowerShell.
    let src = fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
    if (file.endsWith('.tmpl')) {
      src = asPowerShell(src);
    }
    const tree = parser.parse(src);
    const lines = src.split('\n');
    // The first errors locate the mistake; the rest are its echoes.
    const found = problems(tree.rootNode, []);
    for (const { node, what } of found.slice(0, 5)) {
      const { row, column } = node.startPosition;
      const text = (lines[row] || '').trim();
      console.error(`${file}:${row + 1}:${column + 1}: ${what}: ${text.slice(0, 120)}`);
    }
    if (found.length > 5) {
      console.error(`${file}: ${found.length - 5} more`);
    }
    bad += found.length;
    tree.delete();
  }
  return bad > 0 ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`pslint: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  },
);
