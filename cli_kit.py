"""The command-line kit every script shares: parsing, paths, tables, workers, signals.

A leaf module: it knows no model and imports only the standard library (numpy and scipy
only inside versions(), for the JSON it describes).  Every script parses with CLIParser
(one line and exit status 2 on a bad value, no abbreviations, defaults in the help), writes
files with atomic_write, runs parallel work through map_workers and its main() through
run_main (Ctrl-C: one line, status 130).
"""

import argparse
import json
import math
import os
import signal
import sys

LONG_RUN_SECONDS = 120        # print an estimate for runs longer than this


def quit_on_interrupt(prog):
    """Ctrl-C while a script's libraries load: one line on stderr, status 130, no
    traceback (SIGTERM's default action already ends the process quietly).  run_main takes
    over once main() runs."""
    signal.signal(signal.SIGINT, lambda *_: (print(f"{prog}: interrupted", file=sys.stderr),
                                             os._exit(130)))


class Terminated(BaseException):
    """Raised in the main process by SIGTERM, so that pools and files are closed on the
    way out as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


# ----------------------------------------------------------------------------- files


class InputError(ValueError):
    """Input found wrong once a run has begun (a file, parts to merge): run_main ends the
    run with its message, which is one line, and status 2, as a bad flag does."""


def check_output_path(path, folder=False):
    """Raise OSError with a plain reason unless `path` can be written (a file, or with
    folder=True a folder), without creating anything that stays.

    The nearest existing ancestor must be a writable folder; this is probed by making and
    removing a temporary entry there, since permission bits say nothing about read-only or
    special file systems such as /proc.
    """
    if not path:
        raise OSError("the path is empty")
    path = os.path.abspath(path)
    if os.path.isdir(path) and not folder:
        raise OSError("is a folder; give a file name")
    if os.path.exists(path) and folder and not os.path.isdir(path):
        raise OSError("exists and is not a folder")
    if os.path.exists(path) and not folder and not os.path.isfile(path):
        raise OSError("exists and is not a regular file")
    parent = path if folder else os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OSError(f"{parent} is a file, so no folder can be made inside it")
    import tempfile
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".probe"))
    except OSError as err:
        raise OSError(f"cannot write in {parent} ({err.strerror or err})") from None


def atomic_write(path, write):
    """Call write(tmp_path), then rename the temporary file onto path, so that an
    interrupted or failed run never leaves a half-written file.  Missing folders are made
    here, at the first write, and removed again if that write fails and leaves them empty.
    The temporary name keeps the extension, for writers that choose a format by it."""
    folder, name = os.path.split(os.path.abspath(path))
    made, parent = [], folder
    while not os.path.isdir(parent):
        made.append(parent)
        parent = os.path.dirname(parent)
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.tmp{os.getpid()}{ext}")
    ok = False
    try:
        os.makedirs(folder, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
        ok = True
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        if not ok:
            for d in made:                      # deepest first
                try:
                    os.rmdir(d)
                except OSError:
                    break


def write_json(path, payload):
    """Write JSON atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=1)
    atomic_write(path, write)


def write_bytes(path, blob):
    """Write bytes atomically."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(blob)
    atomic_write(path, write)


def versions():
    """The software a JSON result was made with."""
    import platform

    import numpy
    import scipy
    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "platform": platform.platform()}


# ----------------------------------------------------------------------------- parsing

class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each flag's default, except where there is none to show (None, or False
    for a switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class CLIParser(argparse.ArgumentParser):
    """argparse that reports a bad value in one line and exits with status 2.

    Prefix matching is off, so a mistyped flag is an error rather than another flag, and
    every help line shows its default.
    """

    def __init__(self, **kw):
        kw.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(allow_abbrev=False, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _flags(self, argv):
        """(flag as typed, its action) for every flag on the command line argv."""
        argv = sys.argv[1:] if argv is None else argv
        out = []
        for token in argv:
            if token == "--":
                break
            action = self._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                out.append((token.split("=", 1)[0], action))
        return out

    def dests(self):
        """The dests of every flag the parser takes (help aside)."""
        return {a.dest for a in self._actions if a.dest != "help"}

    def given(self, argv):
        """The dests of the flags that appear on the command line argv."""
        return {action.dest for _, action in self._flags(argv)}

    def parse_args(self, args=None, namespace=None):
        """argparse's parse_args, refusing a flag given twice (argparse would keep the last)
        and two flags of a mutually exclusive group whatever their values (argparse lets a
        flag through that is given its default value)."""
        seen = {}
        for flag, action in self._flags(args):
            if action.dest in seen:
                again = "is given twice" if flag == seen[action.dest] else \
                    f"is another name of {seen[action.dest]}, given before"
                self.error(f"{flag} {again}: give each flag once")
            seen[action.dest] = flag
        for group in self._mutually_exclusive_groups:
            both = [seen[a.dest] for a in group._group_actions if a.dest in seen]
            if len(both) > 1:
                self.error(f"argument {both[1]}: not allowed with argument {both[0]}")
        return super().parse_args(args, namespace)

    def refuse_together(self, given, flag, others, why):
        """Error if flag (a dest) was given together with any of others (dests)."""
        clash = [o for o in others if o in given]
        if flag in given and clash:
            names = ", ".join("--" + o.replace("_", "-") for o in clash)
            self.error(f"--{flag.replace('_', '-')} {why}: leave out {names}")

    def output_file(self, flag, path, folder=False):
        """Check, before any work, that a file (with folder=True: a folder) can be written
        at path, or made there; creates nothing."""
        try:
            check_output_path(path, folder=folder)
        except OSError as err:
            self.error(f"{flag} {path!r}: {err}")

    def input_file(self, flag, path):
        """Check, before any work, that path is a file that can be opened for reading."""
        if not path:
            self.error(f"{flag}: the path is empty")
        if os.path.isdir(path):
            self.error(f"{flag} {path!r}: is a folder; give a file")
        if not os.path.exists(path):
            self.error(f"{flag} {path!r}: no such file")
        if not os.path.isfile(path):
            self.error(f"{flag} {path!r}: is not a regular file")
        try:
            open(path, "rb").close()
        except OSError as err:
            self.error(f"{flag} {path!r}: cannot be read ({err.strerror})")

    def add_model_folders(self, what):
        """--save-models DIR and --load-models DIR (one or the other) for the models `what`
        names; see model_folder."""
        group = self.add_mutually_exclusive_group()
        group.add_argument("--save-models", metavar="DIR",
                           help=f"save {what} in DIR after training, one file each")
        group.add_argument("--load-models", metavar="DIR",
                           help=f"load {what} from DIR (--save-models) instead of training "
                                f"them; a file trained with other settings is refused")

    def model_folder(self, args, make):
        """make(path, "save" or "load") for the folder given, after checking, before any
        work, that it can be written or read; None if neither flag is given."""
        if args.save_models is not None:
            self.output_file("--save-models", args.save_models, folder=True)
            return make(args.save_models, "save")
        if args.load_models is not None:
            if not os.path.isdir(args.load_models):
                self.error(f"--load-models {args.load_models!r}: no such folder")
            return make(args.load_models, "load")
        return None

    def add_merge(self):
        """--merge FILE [FILE ...]: the runs' JSON files to put together."""
        self.add_argument("--merge", nargs="+", metavar="FILE",
                          help="merge the --json files of runs that differ only in their "
                               "seeds (one run a seed, on any machines) into the single "
                               "run's tables and JSON (--json)")

    def refuse_with_merge(self, args, given):
        """Error if --merge comes with a flag of a run; check its files can be read."""
        if args.merge:
            self.refuse_together(given, "merge", tuple(sorted(
                self.dests() - {"merge", "json", "markdown", "quiet"})), "reads its runs")
            for path in args.merge:
                self.input_file("--merge", path)
            self.each_once("--merge", args.merge, "file")

    def parse_run(self, argv, models, markdown):
        """The flags every run of a script takes last (--save-models and --load-models for
        `models`, if any, --merge, --markdown with its help, --quiet), then parse_args:
        (args, the dests given), --merge checked."""
        if models:
            self.add_model_folders(models)
        self.add_merge()
        self.add_argument("--markdown", action="store_true", help=markdown)
        self.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        args = self.parse_args(argv)
        given = self.given(argv)
        self.refuse_with_merge(args, given)
        return args, given

    def each_once(self, flag, values, noun):
        """Error if a list-valued flag names a value twice."""
        if values and len(set(values)) != len(values):
            self.error(f"{flag}: each {noun} once, got {' '.join(map(str, values))}")


def _number_parser(kind, lo, hi):
    """An argparse type: a finite number of `kind` in [lo, hi] (hi None: no upper end)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        bound = str if kind is int else (lambda v: f"{v:g}")    # 2**63 - 1 in full
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {bound(lo)}, got {text}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {bound(hi)}, got {text}")
        return value
    return parse


def int_at_least(lo, hi=None):
    """An argparse type: a whole number in [lo, hi]."""
    return _number_parser(int, lo, hi)


def float_between(lo, hi):
    """An argparse type: a number in [lo, hi]."""
    return _number_parser(float, lo, hi)


# ----------------------------------------------------------------------------- resources


def memory_available():
    """Bytes of memory this machine can still give (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(ap, need, hint):
    """Refuse a run that needs `need` bytes when less than 1.25 times that is free."""
    have = memory_available()
    if have is not None and need > 0.8 * have:
        ap.error(f"this run needs about {need / 2**30:.1f} GiB of memory and "
                 f"{have / 2**30:.1f} GiB are free: lower {hint}")


def warn_long_run(seconds, log):
    """Say on stderr what a run longer than LONG_RUN_SECONDS will take, before it starts."""
    if seconds > LONG_RUN_SECONDS:
        log(f"estimated run time: about {seconds / 60:.0f} min on 2 cores (a rough guess "
            f"from the sizes; Ctrl-C stops it)")


def progress_logger(quiet):
    """A function that prints a progress line on stderr, or does nothing when quiet."""
    if quiet:
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def map_workers(fn, tasks, workers):
    """Yield fn(task) for every task, in `workers` forked processes when that helps;
    results arrive in completion order."""
    if workers > 1 and len(tasks) > 1:
        import multiprocessing
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                          else "spawn")
        with ctx.Pool(min(workers, len(tasks)), initializer=_worker_start,
                      initargs=(os.getpid(),)) as pool:
            yield from pool.imap_unordered(fn, tasks)      # leaving the block ends the pool
    else:
        yield from map(fn, tasks)


def _worker_start(parent):
    """A worker ignores Ctrl-C (the parent alone handles it and its pool ends the workers),
    dies of SIGTERM as usual (how a pool ends it), and dies with its parent however the
    parent ends (Linux: the kernel's parent-death signal), so that no worker outlives it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)        # PR_SET_PDEATHSIG
    except (OSError, AttributeError):                     # not Linux: the pool still ends it
        pass
    if os.getppid() != parent:                            # the parent died before that
        os._exit(1)


# ----------------------------------------------------------------------------- merging split runs
#
# A run over several seeds can run as one run a seed, on as many machines, each writing its
# JSON; the merge reads those and makes the JSON and tables of the single run.  These check
# the parts; each script puts their numbers together.


def plain(value):
    """value with its numpy arrays and numbers as lists and floats, and tuples as lists: what
    a JSON file gives back, so that a run and a merge of its parts see the same values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):                       # a numpy array or number
        return value.tolist()
    return value


def read_parts(paths, kinds):
    """[(path, payload)] of JSON files written with --json by runs of one of `kinds` (keys
    of a payload: the kind of run); ValueError in one line naming the file otherwise, or if
    the parts are runs of different kinds."""
    parts = []
    for path in paths:
        try:
            with open(path) as f:
                payload = json.load(f)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot be read as JSON ({err})") from None
        if not (isinstance(payload, dict) and isinstance(payload.get("config"), dict)
                and isinstance(payload["config"].get("seeds"), list)):
            raise InputError(f"{path}: not the --json file of a run of this program")
        kind = [k for k in kinds if k in payload]
        if not kind:
            raise InputError(f"{path}: a run that does not merge (the runs that do: "
                             f"{', '.join(kinds)})")
        if parts and kind[0] != parts[0][2]:
            raise InputError(f"{path} and {parts[0][0]} are runs of different kinds "
                             f"({kind[0]}, {parts[0][2]})")
        parts.append((path, payload, kind[0]))
    return [(path, payload) for path, payload, _ in parts]


def merge_config(parts, split="seeds"):
    """The config of the single run the parts make: their configs must agree but for the
    `split` key (a list: each part's own seeds, or models), which must not overlap; the
    merged list holds them all, ascending for seeds.  ValueError naming a part otherwise."""
    (first, head), seen = parts[0], {}
    for path, payload in parts:
        config = payload["config"]
        for key in sorted((set(config) | set(head["config"])) - {split}):
            if config.get(key) != head["config"].get(key):
                raise InputError(f"{path} was run with {key} = {config.get(key)}, {first} with "
                                 f"{head['config'].get(key)}: only runs that differ in their "
                                 f"{split} merge")
        for item in config[split]:
            if item in seen:
                raise InputError(f"{path}: {split[:-1]} {item} is in {seen[item]} too: give each "
                                 f"part once")
            seen[item] = path
    items = sorted(seen) if split == "seeds" else list(seen)
    return {**head["config"], split: items}


def merge_runs(args, kinds, combine, log, split=lambda kind: "seeds"):
    """--merge: read the --json files args.merge, runs of one of `kinds` (payload keys) that
    differ only in their split(kind) (seeds, or models); combine(kind, payloads, config) ->
    (the single run's entries, its tables).  Prints the tables, writes the JSON (--json):
    the config, the first part's versions, the parts' summed wall time, the files merged."""
    parts = read_parts(args.merge, kinds)
    kind = next(k for k in kinds if k in parts[0][1])
    config = merge_config(parts, split(kind))
    log(f"merging {len(parts)} {kind} runs: {split(kind)} "
        f"{', '.join(map(str, config[split(kind)]))}")
    entries, tables = combine(kind, [payload for _, payload in parts], config)
    print(tables)
    if args.json:
        write_json(args.json, {"config": config, "versions": parts[0][1].get("versions"),
                               "wall_seconds": sum(p.get("wall_seconds", 0.0) for _, p in parts),
                               "merged_from": [path for path, _ in parts], **entries})
    return 0


# ----------------------------------------------------------------------------- tables


def num(x, spec=".2f"):
    """format(x, spec), with a value that rounds to zero shown without a minus sign."""
    text = format(x, spec)
    return format(0.0, spec) if float(text.rstrip("%")) == 0 else text


def table(head, cols, rows, markdown):
    """One table, plain text or Markdown."""
    if markdown:
        line = lambda r: "| " + " | ".join(r) + " |"
        return "\n".join([f"*{head}*", "", line(cols), line(["---"] + ["---:"] * (len(cols) - 1))]
                         + [line(r) for r in rows])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths)))
    return "\n".join([head, line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


def pm(mean, sd):
    """mean ± sd, each with num's two decimals."""
    return f"{num(mean)} ± {num(sd)}"


def mean_sd(values):
    """The mean of values, and ± their sample sd when there are several."""
    import numpy as np
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return num(values[0])
    return pm(values.mean(), values.std(ddof=1))


def round_trip_cell(ok):
    """A coder table's round-trip cell."""
    return "exact" if ok else "FAILED"


# ----------------------------------------------------------------------------- main


def run_main(main, prog, argv=None):
    """Run a script's main(argv); Ctrl-C ends it with one line on stderr and status 130,
    SIGTERM with one line and status 143.  Worker processes end with it (see map_workers)
    and no file is left half-written (atomic_write).  A reader that closes the pipe early
    (`| head`) ends it quietly with status 141, as a shell tool; an InputError with its
    line and status 2."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr, flush=True)
        return 143
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no flush error at exit
        return 141
