"""Fuzz harness for the parsers that face the network (issue 12, issue 21 item 6).

Dialect-neutral parts (run under CPython and the MicroPython unix port):
  mutate.py   a seeded xorshift generator and the mutator (bit flips, byte
              set/insert/delete, splices, length-field edits, truncation)
  targets.py  one class per target (wire, pairing, xbee, link, tls, session,
              x509):
              run(data, rng) feeds one mutated input and checks the acceptance
              properties; anything but success or the project's typed errors
              (atls.errors.ATLSError family) is a failure
  runner.py   the loop: pick a seed input, mutate, run, classify, report
  mpy_main.py the MicroPython entry point (reads a corpus written by CPython)
CPython only:
  corpus.py   seed inputs recorded from real traffic: the firmware client and
              DeviceSession against the service's OpenSSL engine and link,
              link conversations of both roles, XBee frames, pairing packets
  __main__.py `make soak`: the CPython bulk, a sample under the unix port,
              build/soak.json and build/soak/crash-*.bin reproducers;
              `python -m fuzz --replay build/soak/crash-<t>-<n>.json`
Flaws found in modules other helpers own are listed in runner.KNOWN (counted
as "known:<type>", not failures) with an xfail(strict) regression test in
tests/test_fuzz_regressions.py.
"""
