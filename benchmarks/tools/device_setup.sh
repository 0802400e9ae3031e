# Sourced by the device session scripts, from the repo root. The image has torch, triton and h5py
# but not this package: install it offline, editable, without dependencies; and the wheels carried
# in .whl/ (fla, parallax-kernel, helion, ...; see the device tool's README), where they came, into
# /tmp/site on PYTHONPATH. Stops the calling script, with pip's log, if an install fails.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . >>/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
