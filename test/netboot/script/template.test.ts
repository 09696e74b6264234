// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax, not a JS template
import t from "tap";
import {
  parseTemplate,
  renderTemplate,
  TemplateError,
  TrustedCode,
  type View,
} from "../../../src/netboot/script/template.js";

const render = (src: string, view: View) => renderTemplate(parseTemplate("t", src), view);

t.test("values, lists, flags and inverted sections", async (t) => {
  t.equal(render("a {{x}} b", { x: "1" }), "a 1 b");
  t.equal(
    render("{{#disks}}hook {{drive}} {{uri}}\n{{/disks}}boot", {
      disks: [
        { drive: "0x81", uri: "u1" },
        { drive: "0x82", uri: "u2" },
      ],
    }),
    "hook 0x81 u1\nhook 0x82 u2\nboot",
  );
  t.equal(render("{{#on}}yes{{/on}}{{^on}}no{{/on}}", { on: true }), "yes");
  t.equal(render("{{#on}}yes{{/on}}{{^on}}no{{/on}}", { on: false }), "no");
  t.equal(render("{{#l}}x{{/l}}{{^l}}empty{{/l}}", { l: [] }), "empty");
  t.equal(
    render("{{#l}}{{v}}{{outer}} {{/l}}", { outer: "o", l: [{ v: "1" }, { v: "2" }] }),
    "1o 2o ",
  );
});

t.test("tags alone on a line take the line with them; comments vanish", async (t) => {
  const src = "line1\n{{! a comment\n  over two lines }}\n{{#l}}\nitem {{v}}\n{{/l}}\nend\n";
  t.equal(render(src, { l: [{ v: "a" }, { v: "b" }] }), "line1\nitem a\nitem b\nend\n");
  t.equal(render(src, { l: [] }), "line1\nend\n");
  t.equal(render("x {{#a}}y{{/a}} z\n", { a: true }), "x y z\n", "inline sections keep the line");
});

t.test("only plain script tokens can be inserted", async (t) => {
  for (const bad of ["a b", "a\nreboot", "${password}", "||", "-n", "#c", ":label", "é"]) {
    t.throws(() => render("echo {{x}}", { x: bad }), TemplateError, JSON.stringify(bad));
  }
  t.throws(() => render("echo {{x}}", { x: true }), TemplateError, "a flag is not a value");
  t.throws(() => render("echo {{x}}", { x: new TrustedCode("reboot") }), TemplateError);
});

t.test("admin code only through {{&name}} and only as TrustedCode", async (t) => {
  t.equal(
    render("{{&s}}", { s: new TrustedCode("#!ipxe\necho ${x} || shell\n") }),
    "#!ipxe\necho ${x} || shell\n",
  );
  t.throws(
    () => render("{{&s}}", { s: "#!ipxe\nreboot\n" }),
    TemplateError,
    "a plain string is refused",
  );
});

t.test("mistakes in templates fail loudly", async (t) => {
  t.throws(() => render("{{missing}}", {}), TemplateError, "unknown name");
  t.throws(() => render("{{#missing}}x{{/missing}}", {}), TemplateError, "unknown section");
  t.throws(() => parseTemplate("t", "{{#a}}x"), TemplateError, "unclosed section");
  t.throws(() => parseTemplate("t", "{{#a}}x{{/b}}"), TemplateError, "mismatched close");
  t.throws(() => parseTemplate("t", "{{/a}}"), TemplateError, "close without open");
  t.throws(() => parseTemplate("t", "{{a b}}"), TemplateError, "bad name");
});
