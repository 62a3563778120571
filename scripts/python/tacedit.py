# latentworker: rewrite the connection settings of a buildbot.tac in place.
# Usage: LW_MASTER_HOST=.. LW_MASTER_PORT=.. LW_WORKER_NAME=.. LW_WORKER_PASSWD=.. python3 - TAC
# Values come from the environment so the password never appears in argv.
# Prints "changed" or "unchanged" on stdout; exits non-zero on any error.
# The file ends up mode 0600, owned by LW_TAC_OWNER (default: the owner of
# its directory).
import ast
import os
import sys

try:
    import pwd
except ImportError:  # Windows: the caller sets the file's owner and ACL
    pwd = None


def fail(msg):
    sys.stderr.write("latentworker: error: %s\n" % msg)
    sys.exit(2)


def assignments(tree, names):
    found = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in names):
            found.setdefault(node.targets[0].id, []).append(node)
    return found


def main():
    path = sys.argv[1]
    try:
        want = {
            "buildmaster_host": os.environ["LW_MASTER_HOST"],
            "port": int(os.environ["LW_MASTER_PORT"]),
            "workername": os.environ["LW_WORKER_NAME"],
            "passwd": os.environ["LW_WORKER_PASSWD"],
            "keepalive": 60,
            "delete_leftover_dirs": 1,
        }
    except (KeyError, ValueError) as e:
        fail("bad environment: %r" % (e,))
    with open(path, encoding="utf-8") as f:
        src = f.read()
    try:
        tree = ast.parse(src, path)
    except SyntaxError as e:
        fail("%s is not valid Python: line %s" % (path, e.lineno))
    found = assignments(tree, want)
    missing = sorted(set(want) - set(found))
    if missing:
        fail("%s has no top-level assignment of %s" % (path, ", ".join(missing)))
    lines = src.splitlines(keepends=True)
    edits = []
    for name, nodes in found.items():
        for node in nodes:
            first, last = node.lineno - 1, node.end_lineno - 1
            rest = lines[last][node.end_col_offset:].strip()
            if node.col_offset != 0 or (rest and not rest.startswith("#")):
                fail("%s line %d: %s shares its line with other code"
                     % (path, node.lineno, name))
            edits.append((first, last, "%s = %r\n" % (name, want[name])))
    for first, last, text in sorted(edits, reverse=True):
        lines[first:last + 1] = [text]
    new = "".join(lines)

    # Check the result before it replaces the original.
    check = assignments(ast.parse(new, path), want)
    for name, value in want.items():
        for node in check.get(name, []):
            if ast.literal_eval(node.value) != value:
                fail("%s: %s did not take its new value" % (path, name))

    if pwd is None:
        if new == src:
            print("unchanged")
            return
        tmp = path + ".latentworker-tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        print("changed")
        return
    owner = os.environ.get("LW_TAC_OWNER")
    if owner:
        pw = pwd.getpwnam(owner)
        uid, gid = pw.pw_uid, pw.pw_gid
    else:
        st = os.stat(os.path.dirname(os.path.abspath(path)))
        uid, gid = st.st_uid, st.st_gid
    cur = os.stat(path)
    if (new == src and cur.st_mode & 0o777 == 0o600
            and (cur.st_uid, cur.st_gid) == (uid, gid)):
        print("unchanged")
        return
    tmp = path + ".latentworker-tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchown(f.fileno(), uid, gid)
        os.fchmod(f.fileno(), 0o600)
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print("changed" if new != src else "unchanged")


main()
