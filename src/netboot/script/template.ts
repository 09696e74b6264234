// The smallest template language that the boot scripts need, so no template engine
// dependency: {{name}} inserts a value, {{#name}}...{{/name}} repeats over a list (or keeps
// its body when the value is true), {{^name}}...{{/name}} keeps its body when the value is
// false or an empty list, {{! ...}} is a comment, and {{&name}} inserts admin-written code.
//
// Safety does not depend on the template author: {{name}} accepts only strings that are a
// plain iPXE token (see values.ts), so whatever a template does with a value, the value
// cannot split a line, start a comment, form an operator or be expanded. {{&name}} accepts
// only a TrustedCode, which only the "custom" kind creates.

import { isScriptToken } from "./values.js";

/** Admin-written iPXE code, inserted as is by {{&name}}. */
export class TrustedCode {
  readonly code: string;
  constructor(code: string) {
    this.code = code;
  }
}

export type ViewValue = string | boolean | TrustedCode | View | View[];
export interface View {
  readonly [name: string]: ViewValue;
}

export class TemplateError extends Error {
  constructor(template: string, message: string) {
    super(`template ${template}: ${message}`);
    this.name = "TemplateError";
  }
}

type Node =
  | { kind: "text"; text: string }
  | { kind: "value"; name: string; raw: boolean }
  | { kind: "section"; name: string; inverted: boolean; body: Node[] };

export interface Template {
  readonly name: string;
  readonly nodes: readonly Node[];
}

const TAG = /\{\{([#^/!&]?)\s*([^}]*?)\s*\}\}/g;
const NAME = /^[A-Za-z][A-Za-z0-9_]*$/;

export function parseTemplate(name: string, source: string): Template {
  const root: Node[] = [];
  const stack: { name: string; body: Node[] }[] = [];
  let body = root;
  let pos = 0;

  for (const m of source.matchAll(TAG)) {
    const sigil = m[1] ?? "";
    const tagName = m[2] ?? "";
    let start = m.index;
    let end = start + m[0].length;

    // A section or comment tag alone on its line takes the line with it, so templates can
    // put tags on lines of their own without leaving blank lines in the script.
    if (sigil === "#" || sigil === "^" || sigil === "/" || sigil === "!") {
      const lineStart = source.lastIndexOf("\n", start - 1) + 1;
      const nl = source.indexOf("\n", end);
      const lineEnd = nl === -1 ? source.length : nl + 1;
      if (
        /^[ \t]*$/.test(source.slice(lineStart, start)) &&
        /^[ \t]*\r?\n?$/.test(source.slice(end, lineEnd)) &&
        lineStart >= pos
      ) {
        start = lineStart;
        end = lineEnd;
      }
    }

    if (start > pos) body.push({ kind: "text", text: source.slice(pos, start) });
    pos = end;

    if (sigil === "!") continue;
    if (!NAME.test(tagName)) throw new TemplateError(name, `bad tag name "${tagName}"`);

    if (sigil === "#" || sigil === "^") {
      const section: Node = { kind: "section", name: tagName, inverted: sigil === "^", body: [] };
      body.push(section);
      stack.push({ name: tagName, body });
      body = section.body;
    } else if (sigil === "/") {
      const open = stack.pop();
      if (!open || open.name !== tagName) {
        throw new TemplateError(name, `{{/${tagName}}} closes ${open ? open.name : "nothing"}`);
      }
      body = open.body;
    } else {
      body.push({ kind: "value", name: tagName, raw: sigil === "&" });
    }
  }
  if (stack.length > 0) {
    throw new TemplateError(name, `{{#${stack[stack.length - 1]?.name}}} is never closed`);
  }
  if (pos < source.length) body.push({ kind: "text", text: source.slice(pos) });
  return { name, nodes: root };
}

function lookup(template: string, scopes: readonly View[], name: string): ViewValue {
  for (let i = scopes.length - 1; i >= 0; i--) {
    const scope = scopes[i];
    if (scope !== undefined && Object.hasOwn(scope, name)) return scope[name] as ViewValue;
  }
  // A misspelt name is a bug in the template or in the kind's view: fail loudly.
  throw new TemplateError(template, `no value named "${name}"`);
}

function isView(v: ViewValue): v is View {
  return typeof v === "object" && !Array.isArray(v) && !(v instanceof TrustedCode);
}

function renderNodes(t: string, nodes: readonly Node[], scopes: View[], out: string[]): void {
  for (const node of nodes) {
    if (node.kind === "text") {
      out.push(node.text);
      continue;
    }
    const value = lookup(t, scopes, node.name);
    if (node.kind === "value") {
      if (node.raw) {
        if (!(value instanceof TrustedCode)) {
          throw new TemplateError(t, `{{&${node.name}}} needs admin-written code`);
        }
        out.push(value.code);
      } else {
        if (typeof value !== "string") {
          throw new TemplateError(t, `{{${node.name}}} is not a string value`);
        }
        if (!isScriptToken(value)) {
          throw new TemplateError(t, `{{${node.name}}} is not a safe script token`);
        }
        out.push(value);
      }
      continue;
    }
    const truthy = Array.isArray(value) ? value.length > 0 : value !== false && value !== "";
    if (node.inverted) {
      if (!truthy) renderNodes(t, node.body, scopes, out);
    } else if (Array.isArray(value)) {
      for (const item of value) renderNodes(t, node.body, [...scopes, item], out);
    } else if (truthy) {
      renderNodes(t, node.body, isView(value) ? [...scopes, value] : scopes, out);
    }
  }
}

export function renderTemplate(template: Template, view: View): string {
  const out: string[] = [];
  renderNodes(template.name, template.nodes, [view], out);
  return out.join("");
}
