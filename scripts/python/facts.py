# latentworker: print facts about a buildbot worker directory as key=value lines.
# Usage: LW_EXPECTED_PASSWD=.. python3 - WORKER_DIR
# buildbot.tac is parsed with ast, never executed. The password is compared,
# never printed. Values escape backslash as \\ and control characters as \xNN.
import ast
import hmac
import os
import sys

try:
    import grp
    import pwd
except ImportError:  # Windows: the caller reports the file's owner and ACL
    grp = pwd = None

FIELDS = ("keepalive", "delete_leftover_dirs", "buildmaster_host", "port", "workername")


def clean(value):
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def emit(key, value):
    sys.stdout.write("%s=%s\n" % (key, clean(value)))


def literal(node):
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None, False
    return value, True


def show(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(value)


def owner(st):
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return "%s:%s" % (user, group)


def read_info(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    except FileNotFoundError:
        return None


def main():
    wdir = sys.argv[1]
    expected = os.environ.get("LW_EXPECTED_PASSWD", "")
    tac = os.path.join(wdir, "buildbot.tac")
    try:
        with open(tac, encoding="utf-8") as f:
            src = f.read()
        st = os.stat(tac)
    except FileNotFoundError:
        emit("tac_present", "no")
        src = None
    if src is not None:
        emit("tac_present", "yes")
        if pwd is not None:
            emit("tac_mode", "%04o" % (st.st_mode & 0o7777))
            emit("tac_owner", owner(st))
        try:
            tree = ast.parse(src, tac)
        except SyntaxError as e:
            emit("tac_error", "syntax error on line %s" % e.lineno)
            tree = ast.Module(body=[], type_ignores=[])
        values = {}
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)):
                values[node.targets[0].id] = node.value
        for key in FIELDS:
            if key in values:
                value, ok = literal(values[key])
                emit(key, show(value) if ok else "<expression>")
        state = "mismatch"
        if "passwd" in values:
            value, ok = literal(values["passwd"])
            if (ok and isinstance(value, str) and expected
                    and hmac.compare_digest(value.encode(), expected.encode())):
                state = "ok"
        emit("passwd", state)
    admin = read_info(os.path.join(wdir, "info", "admin"))
    if admin is not None:
        emit("info_admin", admin)
    host = read_info(os.path.join(wdir, "info", "host"))
    emit("info_host_present", "yes" if host and host.strip() else "no")
    if host is not None:
        emit("info_host", host)


main()
