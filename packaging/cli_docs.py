#!/usr/bin/env python3
"""The command tree of a CLI11 program (kiln, kilnd), read from its own --help, and what the
package makes of it. Used to write and to check the man pages and bash completions:

  cli_docs.py tree BIN              one line per command: "<path>|<flags>|<subcommands>"
                                    (tests/integration/package_docs_test.sh checks docs/man
                                    and deploy/completion against it)
  cli_docs.py completion BIN NAME   the bash completion script deploy/completion/NAME
  cli_docs.py man BIN               roff for the OPTIONS and COMMANDS sections of a man page
  cli_docs.py man-update BIN PAGE   rewrites them in PAGE (docs/man/*.{1,8}), between its
                                    "BEGIN generated"/"END generated" comments
"""
import re
import subprocess
import sys

LEFT = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")
# Flags whose value is a file or directory (completed with file names).
FILE_FLAGS = {"--config", "-c", "--cacert", "--file", "--out", "-o", "--output", "--key",
              "--tls-cert", "--tls-key", "--password-file", "--ca-file", "--ssh-key-file",
              "--user-data-file", "--vendor-data-file", "--network-config-file", "--db",
              "--data-dir", "--files-dir", "--ready-file", "--sign"}


class Command:
    def __init__(self, path, text):
        self.path = path
        lines = text.splitlines()
        self.summary = lines[0] if lines and not lines[0].startswith("Usage:") else ""
        self.usage = next((l[len("Usage: "):] for l in lines if l.startswith("Usage: ")), "")
        self.options, self.positionals, self.subs = [], [], []
        section, last = None, None
        for line in lines:
            if line and not line.startswith(" "):
                section = line[:-1] if line.endswith(":") else None
                last = None
                continue
            if line.startswith(" " * 20) and last is not None:
                last[2] = (last[2] + " " + line.strip()).strip()
                continue
            m = LEFT.match(line)
            if not m or section not in ("Options", "Positionals", "Subcommands"):
                continue
            left, desc = m.group(1), m.group(2) or ""
            if section == "Options":
                names, _, arg = left.partition(" ")
                last = [names.split(","), arg.replace(" REQUIRED", "").strip(), desc]
                self.options.append(last)
            elif section == "Positionals":
                name, _, arg = left.partition(" ")
                last = [[name], arg.replace(" REQUIRED", "").strip(), desc]
                self.positionals.append(last)
            else:
                last = [[left], "", desc]
                self.subs.append(last)

    def flags(self):
        return [n for names, _, _ in self.options for n in names]


def walk(binary, path=()):
    text = subprocess.run([binary, *path, "--help"], capture_output=True, text=True,
                          check=True).stdout
    cmd = Command(list(path), text)
    out = [cmd]
    for names, _, _ in cmd.subs:
        out += walk(binary, (*path, names[0]))
    return out


def tree(binary):
    for c in walk(binary):
        print(f"{' '.join(c.path)}|{' '.join(c.flags())}|{' '.join(s[0][0] for s in c.subs)}")


def completion(binary, name):
    cmds = walk(binary)
    fn = "_" + name.replace("-", "_")
    file_flags = sorted({f for c in cmds for f in c.flags() if f in FILE_FLAGS})
    print(f"# bash completion for {name}: subcommands and flags, from `{name} --help`")
    print(f"# (packaging/cli_docs.py completion; tests/integration/package_docs_test.sh checks "
          f"it against the binary).")
    print("# shellcheck shell=bash")
    print(f"{fn}() {{")
    print("  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}")
    print("  local -A words=(")
    for c in cmds:
        key = " ".join([name] + c.path)
        words = c.flags() + [s[0][0] for s in c.subs]
        print(f'    ["{key}"]="{" ".join(words)}"')
    print("  )")
    print(f'  local path={name} i w')
    print("  for ((i = 1; i < COMP_CWORD; i++)); do")
    print("    w=${COMP_WORDS[i]}")
    print('    [[ $w == -* ]] && continue')
    print('    [[ -n ${words["$path $w"]+x} ]] && path="$path $w"')
    print("  done")
    print("  case $prev in")
    print(f"    {'|'.join(file_flags)})")
    print('      mapfile -t COMPREPLY < <(compgen -f -- "$cur")')
    print("      return ;;")
    print("  esac")
    print('  mapfile -t COMPREPLY < <(compgen -W "${words[$path]}" -- "$cur")')
    print("}")
    print(f"complete -F {fn} {name}")


def roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def options_roff(c):
    out = []
    for names, arg, desc in c.positionals + c.options:
        if names == ["-h", "--help"]:
            continue
        head = ", ".join(f"\\fB{roff(n)}\\fR" for n in names)
        if arg:
            head += f" \\fI{roff(arg)}\\fR"
        out += [".TP", head, roff(desc)]
    return out


def man(binary):
    cmds = walk(binary)
    prog = binary.rsplit("/", 1)[-1]
    print(".SH OPTIONS")
    print("\n".join(options_roff(cmds[0])))
    print(".SH COMMANDS")
    for c in cmds[1:]:
        usage = " ".join([prog] + c.path) + c.usage.split(" ".join(c.path), 1)[-1] \
            if c.path else c.usage
        print(f'.SS "{roff(usage)}"')
        print(roff(c.summary) + ("." if c.summary and not c.summary.endswith(".") else ""))
        for line in options_roff(c):
            print(line)
        if c.subs:
            print(".PP")
            print("Subcommands: " + ", ".join(f"\\fB{roff(s[0][0])}\\fR" for s in c.subs) + ".")


BEGIN, END = '.\\" BEGIN generated by packaging/cli_docs.py', '.\\" END generated'


def man_update(binary, page):
    """Replaces the lines between the BEGIN/END comments of `page` with man(binary)."""
    import contextlib
    import io
    text = open(page).read()
    head, _, rest = text.partition(BEGIN + "\n")
    _, _, tail = rest.partition(END + "\n")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        man(binary)
    open(page, "w").write(head + BEGIN + "\n" + buf.getvalue() + END + "\n" + tail)


if __name__ == "__main__":
    mode, binary = sys.argv[1], sys.argv[2]
    {"tree": lambda: tree(binary), "completion": lambda: completion(binary, sys.argv[3]),
     "man": lambda: man(binary), "man-update": lambda: man_update(binary, sys.argv[3])}[mode]()
