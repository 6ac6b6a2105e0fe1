#!/usr/bin/env bash
# Regenerates the console screenshots in docs/console/*.png, which
# docs/CONSOLE.md shows: the browser tests that visit the main pages
# (tests/tests/console_browser.rs) run in headless Chromium against a real
# collector with real agents, and save what the pages show.
#
# Usage: scripts/console-screenshots.sh   (from anywhere in the repository;
# needs Debian's chromium and chromium-driver, and tshark and libpcap for
# the capture page: .ci/run installs them)
set -euo pipefail
cd "$(dirname "$0")/.."

export GLIMPSE_WRITE_SCREENSHOTS=1 CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# A skipped test would leave an old picture in place: fail instead.
export CI=${CI:-1}
# sign-in, organisation, devices, tokens, audit; support and its history;
# capture and a capture's packets; organisations, operator, a device's
# charts, data rights; accounts and my account.
cargo test -p glimpse-tests --test console_browser -- --exact \
  signing_in_shows_the_account_and_signing_out_ends_the_session \
  support_is_refused_without_a_grant_and_allowed_with_one \
  a_capture_started_in_the_browser_finishes_and_downloads_as_pcapng \
  operators_see_every_organisation_the_device_charts_and_the_data_rights_page \
  an_account_made_in_the_browser_sets_up_one_time_codes_and_then_needs_one
ls -l docs/console/*.png
