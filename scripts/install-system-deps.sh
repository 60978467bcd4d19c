#!/usr/bin/env bash
# Install the Debian packages the tests use: headless Chromium and its driver (the browser
# fetcher and the page screenshots) and SpamAssassin (the spam score of every email kind, and
# `mailgate mail-test`). Idempotent: does nothing when all binaries are present. Needs root (or
# sudo) only when something is missing. Selenium is pointed at /usr/bin/chromedriver, so Selenium
# Manager never downloads a driver of its own.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/spamassassin ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "mailgate: install Chromium at /usr/bin/chromium, chromedriver at /usr/bin/chromedriver" \
       "and SpamAssassin at /usr/bin/spamassassin" >&2
  exit 1
fi

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "mailgate: root is needed to install chromium, chromium-driver and spamassassin: $*" >&2
    return 1
  fi
}

run_as_root apt-get update -qq
run_as_root env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends chromium chromium-driver spamassassin
