"""``python -m sbnn_hdl.board``: run a model on a board built by ``generate --board``.

Subcommands:

  run       send samples, check every prediction against the golden model, measure latency
            and throughput (on chip, from the board's cycle counters) and the host's round trip;
            prints them as a table (and with --json FILE writes them as JSON)
  check     protocol robustness on a live board: bad CRC, bad length, unknown type, garbage,
            a partial frame that must time out; then a normal request
  program   load a bitstream with openFPGALoader (SRAM, or --flash)
  simulate  serve the board-in-the-loop simulation (Verilator) on a TCP port, for
            ``run --port socket://127.0.0.1:PORT``

``--port`` is a serial device (``/dev/ttyUSB0``) or any pyserial URL (``socket://host:port``).
"""

import argparse
import json
import os
import signal
import sys

import numpy as np

from .. import golden, modelfile
from .._cli import command, load_array, share_option
from .._files import write_atomic
from ..errors import SbnnError
from ..hwplan import pack_sample
from ..simulation.board import BoardSimulation
from ..streamplan import HEADS
from . import get_board, protocol as P
from .client import check_model, check_protocol, describe_link, format_run, open_port, program, run_model

__all__ = ["main"]


def _run(args):
    if args.json:
        # Refused before the run, not after it: the samples may take minutes over a real UART.
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            raise SbnnError(f"--json {args.json}: expected an existing folder for it, found no {folder}")
    model = modelfile.load(args.model)
    with open(args.model, "rb") as file:
        model_bytes = file.read()
    x = load_array(args.inputs, "inputs")
    if args.limit:
        x = x[:args.limit]
    labels = load_array(args.labels, "labels")[:len(x)] if args.labels else None
    golden.infer(model, x[:1])  # refuses badly shaped inputs with the usual message
    with open_port(args.port, args.baud) as port:
        client = P.Client(port, timeout=args.timeout)
        client.resync()
        info = client.info
        check_model(info, model, model_bytes, args.model)
        result = run_model(client, model, x, labels=labels, scores=args.scores, batch=not args.no_batch,
                           link=describe_link(args.port, info))
    print(format_run(result))
    if args.json:
        write_atomic(args.json, (json.dumps(result, indent=2) + "\n").encode())
    return 0 if result["ok"] else 1


def _check(args):
    model = modelfile.load(args.model) if args.model else None
    with open_port(args.port, args.baud) as port:
        client = P.Client(port, timeout=args.timeout)
        client.resync()
        sample = 0
        if model is not None:
            x = np.random.default_rng(0).integers(0, 1 << model.input.bits, model.input.shape)
            sample = pack_sample(model.input, x)
        results = check_protocol(client, model, sample)
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def _program(args):
    print(program(get_board(args.board), args.bitstream, flash=args.flash,
                  log=lambda line: print(line, file=sys.stderr)))
    return 0


def _simulate(args):
    # SIGTERM as Ctrl-C: either way the simulation process is stopped with this one, not left
    # behind (and a build in progress cleans up after itself).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sim = BoardSimulation(args.model, head=args.head, share=args.share, progress=lambda m: print(m, file=sys.stderr))
    try:   # (from the start: a signal may come as soon as the address is out)
        url = sim.start(args.listen)
        print(f"board simulation of {args.model} on {url} (Ctrl-C stops it); e.g.\n"
              f"  python -m sbnn_hdl.board run --port {url} --model {args.model} --inputs X.npy", flush=True)
        sim.process.wait()
    finally:
        sim.stop()
    return 0


@command("sbnn_hdl.board")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.board", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="job", required=True)
    for name in ("run", "check"):
        p = sub.add_parser(name)
        p.add_argument("--port", required=True, help="serial device or pyserial URL (socket://127.0.0.1:PORT)")
        p.add_argument("--baud", type=int, default=3_000_000, help="baud rate (default 3000000, as built)")
        p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a reply (default 2)")
        if name == "run":
            p.add_argument("--model", required=True, help="the .sbnn file the board was built from")
            p.add_argument("--inputs", required=True, help="samples, .npy [N, *input shape]")
            p.add_argument("--labels", help="labels, .npy [N], for the accuracy")
            p.add_argument("--limit", type=int, help="only the first N samples")
            p.add_argument("--scores", action="store_true", help="also fetch and check every score")
            p.add_argument("--no-batch", action="store_true", help="skip the on-chip batch (throughput) run")
            p.add_argument("--json", metavar="FILE", help="also write the results and the on-board figures here "
                                                          "(JSON, written atomically)")
        else:
            p.add_argument("--model", help="the .sbnn file (to check the valid request's prediction)")
    p = sub.add_parser("program")
    p.add_argument("bitstream", help="the .bit file (e.g. bitstreams/ulx3s/digits.bit)")
    p.add_argument("--board", default="ulx3s", help="board name (default ulx3s)")
    p.add_argument("--flash", action="store_true", help="write the SPI flash (kept after power-off)")
    p = sub.add_parser("simulate")
    p.add_argument("model", help="the .sbnn file")
    p.add_argument("--listen", type=int, default=0, help="TCP port on 127.0.0.1 (default: any free one)")
    p.add_argument("--head", choices=HEADS, default="unrolled",
                   help="a conv model's first dense layer, as generate --head (default unrolled)")
    p.add_argument("--share", type=share_option, default="auto", metavar="auto|off|N",
                   help="a conv model's shared conv stages, as generate --share (default auto)")
    args = parser.parse_args(argv)
    return {"run": _run, "check": _check, "program": _program, "simulate": _simulate}[args.job](args)


if __name__ == "__main__":
    sys.exit(main())
