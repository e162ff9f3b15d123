# KeyBridge: developer and CI entry points.
#
#   make deps    install the Debian packages that are missing (apt, as root)
#   make build   swift build
#   make setup   deps + build + ./softhsm-setup (token and test PKI in .state)
#   make demo    mTLS request with the token's RSA key to a local nginx bank, then a signed
#                Berlin Group POST through it to the PSD2 sandbox (keybridge mock-bank), then
#                the same POST as plain HTTP through the broker (keybridge serve)
#   make test    deps + build + setup + swift test
#   make bench   deps + setup + release build + keybridge bench (issue 7; under 15 minutes)
#   make install install keybridge, the provider module and the man page under PREFIX
#                (default /usr/local; CONFIGURATION=release for the optimised build)
#   make clean   remove .state and .build
#   make check-deep  sanitizers (TSan, ASan), leaks and fuzzing; slow, not part of make test
#                (FUZZ_SECONDS=600 per fuzz target; see scripts/check-deep)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

STATE := $(CURDIR)/.state
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
SWIFT_TEST_FLAGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# softhsm2: development/test token; opensc: pkcs11-tool; nginx-light: peer
# server; libengine-pkcs11-openssl: libp11 engine (CSRs, baseline); p11-kit,
# p11-kit-modules: token in another process; *-dev + pkg-config: the build.
# openssl (the CLI) and libp11-kit-dev (PKCS#11 headers, pkg-config
# p11-kit-1) are needed too and not always pulled in by the others.
DEB_PACKAGES := softhsm2 opensc nginx-light libengine-pkcs11-openssl p11-kit \
	p11-kit-modules libcurl4-openssl-dev libmicrohttpd-dev libssl-dev pkg-config \
	libp11-kit-dev openssl curl

.PHONY: deps build setup demo test bench clean man docs install check-deep

deps:
	@missing=(); \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Abbrev}' "$$p" 2>/dev/null | grep -q '^ii' || missing+=("$$p"); \
	done; \
	if (( $${#missing[@]} )); then \
	  echo "deps: installing $${missing[*]}"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y "$${missing[@]}"; \
	fi

build: deps
	$(SWIFT) build

# After the build: softhsm-setup may use the built provider module. The
# prerequisites chain deps -> build -> setup, so the order holds under -j too.
setup: deps build
	./softhsm-setup --state $(STATE)

# 1. An mTLS request with the token's RSA key to nginx.
# 2. The PSD2 sandbox (keybridge mock-bank) on a free port, nginx restarted to proxy /psd2/ to it,
#    and a Berlin Group POST signed with the QSealC's token key (qseal-ec) sent through nginx;
#    the sandbox logs one line to stderr and answers the JSON of what it checked.
# 3. The broker (keybridge serve) on a free port with a generated configuration: bank "sandbox" is
#    the nginx /psd2/ route with the same two token keys, one caller with a random bearer token
#    (the configuration holds only its SHA-256). curl sends the POST as plain HTTP; the broker
#    does the mTLS and the signature; its JSON log line for the request is shown; SIGTERM stops it.
# Always stops the broker, nginx and the sandbox; fails when a request fails or the sandbox rejects a POST.
demo: deps build setup
	@port=$$(scripts/bank-nginx start $(STATE)); \
	mock_pid=; broker_pid=; \
	trap 'for p in $$broker_pid $$mock_pid; do kill $$p 2>/dev/null || true; wait $$p 2>/dev/null || true; done; scripts/bank-nginx stop $(STATE)' EXIT; \
	echo "bank nginx on https://localhost:$$port"; \
	export SOFTHSM2_CONF=$(STATE)/softhsm2.conf; \
	.build/debug/keybridge request -v \
	  --cacert .state/pki/root-ca.pem --cert .state/pki/client-rsa-chain.pem \
	  --key "$$(cat .state/uris/rsa)" --tlsv1.3 https://localhost:$$port/accounts; \
	echo; \
	mkdir -p $(STATE)/mock-bank; rm -f $(STATE)/mock-bank/port; \
	.build/debug/keybridge mock-bank --listen 127.0.0.1:0 \
	  --qwac-ca .state/pki/issuing-ca.pem --qsealc-ca .state/pki/issuing-ca.pem \
	  >$(STATE)/mock-bank/port & mock_pid=$$!; \
	for _ in $$(seq 100); do \
	  [ -s $(STATE)/mock-bank/port ] && break; kill -0 $$mock_pid 2>/dev/null || exit 1; sleep 0.05; \
	done; \
	mock_port=$$(cat $(STATE)/mock-bank/port); \
	port=$$(scripts/bank-nginx start $(STATE) $$mock_port); \
	echo "bank nginx on https://localhost:$$port, /psd2/ proxied to the mock bank on 127.0.0.1:$$mock_port"; \
	echo "signed Berlin Group POST: QWAC client-rsa (mTLS), QSealC qseal-ec (signature), both keys on the token"; \
	answer=$$(.build/debug/keybridge request \
	  --cacert .state/pki/root-ca.pem --cert .state/pki/client-rsa-chain.pem --key "$$(cat .state/uris/rsa)" \
	  --sign-profile berlin-group --sign-key "$$(cat .state/uris/qseal-ec)" --sign-cert .state/pki/qseal-ec.pem \
	  -H 'PSU-ID: demo' -H 'Content-Type: application/json' \
	  -d '{"instructedAmount":{"currency":"EUR","amount":"12.34"}}' \
	  https://localhost:$$port/psd2/v1/payments/sepa-credit-transfers); \
	echo "the sandbox answered:"; \
	if command -v python3 >/dev/null; then python3 -m json.tool <<<"$$answer"; else echo "$$answer"; fi; \
	grep -q '"result":"accepted"' <<<"$$answer"; \
	echo; \
	mkdir -p $(STATE)/broker; rm -f $(STATE)/broker/port; \
	broker_token=$$(openssl rand -hex 24); \
	token_hash=$$(printf '%s' "$$broker_token" | .build/debug/keybridge serve --hash-token); \
	printf '{"listen":"127.0.0.1:0","banks":{"sandbox":{"upstream":"https://localhost:%s/psd2","caFile":"%s","key":"%s","cert":"%s","signing":{"profile":"berlin-group","key":"%s","cert":"%s"},"retry":{"maxAttempts":3}}},"callers":[{"name":"demo","tokenSHA256":"%s","banks":["sandbox"]}]}\n' \
	  "$$port" "$(STATE)/pki/root-ca.pem" "$$(cat .state/uris/rsa)" "$(STATE)/pki/client-rsa-chain.pem" \
	  "$$(cat .state/uris/qseal-ec)" "$(STATE)/pki/qseal-ec.pem" "$$token_hash" >$(STATE)/broker/broker.json; \
	.build/debug/keybridge serve --config $(STATE)/broker/broker.json >$(STATE)/broker/port 2>$(STATE)/broker/log & broker_pid=$$!; \
	for _ in $$(seq 200); do \
	  [ -s $(STATE)/broker/port ] && break; kill -0 $$broker_pid 2>/dev/null || { cat $(STATE)/broker/log; exit 1; }; sleep 0.05; \
	done; \
	broker_port=$$(cat $(STATE)/broker/port); \
	echo "broker (keybridge serve) on http://127.0.0.1:$$broker_port, bank 'sandbox' = https://localhost:$$port/psd2"; \
	echo "the same POST as plain HTTP with a bearer token; the broker does the mTLS (client-rsa) and the signature (qseal-ec):"; \
	request_id=demo-$$(openssl rand -hex 8); \
	answer=$$(curl -sS --max-time 30 -H "Authorization: Bearer $$broker_token" -H "X-Request-ID: $$request_id" \
	  -H 'PSU-ID: demo' -H 'Content-Type: application/json' \
	  -d '{"instructedAmount":{"currency":"EUR","amount":"12.34"}}' \
	  http://127.0.0.1:$$broker_port/sandbox/v1/payments/sepa-credit-transfers); \
	echo "the sandbox answered through the broker:"; \
	if command -v python3 >/dev/null; then python3 -m json.tool <<<"$$answer"; else echo "$$answer"; fi; \
	echo "the broker's log line for $$request_id:"; \
	grep -F "\"requestId\":\"$$request_id\"" $(STATE)/broker/log; \
	kill -TERM $$broker_pid; wait $$broker_pid; broker_pid=; \
	echo "broker stopped (SIGTERM)"; \
	grep -q '"result":"accepted"' <<<"$$answer"

# Tests make their own token directories with ./softhsm-setup --state <tmp>;
# setup here checks the script once before the test run.
# The CLI tests run the built keybridge binary, so build it first.
# All tests are XCTest; Swift Testing is off so its "0 tests" line does not close the run.
# The last line repeats XCTest's totals in the plain "N passed, N failed" form.
test: deps build setup
	@log=$$(mktemp); status=0; \
	$(SWIFT) test --disable-swift-testing $(SWIFT_TEST_FLAGS) 2>&1 | tee "$$log" || status=$$?; \
	summary=$$(grep -E 'Executed [0-9]+ tests?, with [0-9]+ failures?' "$$log" | tail -n 1); \
	rm -f "$$log"; \
	total=$$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$$summary"); \
	failed=$$(sed -E 's/.*with ([0-9]+) failures?.*/\1/' <<<"$$summary"); \
	if [ -n "$$summary" ]; then echo "$$((total - failed)) passed, $$failed failed"; fi; \
	exit $$status

# Release build, then every figure of issue 7; tables on stdout and in .state/bench/results.md,
# figures in .state/bench/results.json. The benchmark makes its own token in .state/bench.
bench: deps setup
	$(SWIFT) build -c release
	.build/release/keybridge bench --state $(STATE)

clean:
	@if [ -d $(STATE)/nginx ]; then scripts/bank-nginx stop $(STATE) || true; fi
	rm -rf $(STATE) .build

# The man page, generated from the CLI's help texts (ManPageTests checks it is current).
man: build
	.build/debug/keybridge help --man > docs/keybridge.1

# DocC HTML for the library catalogs, in .build/docs/MODULE (the toolchain's docc; no plugin needed).
DOCC ?= $(dir $(SWIFT))docc
docs: build
	$(SWIFT) package dump-symbol-graph >/dev/null
	@for m in PKCS11 KeyBridgeTLS OpenBanking; do \
	  rm -rf .build/docs/symbols/$$m; mkdir -p .build/docs/symbols/$$m; \
	  cp .build/*/symbolgraph/$$m.symbols.json .build/*/symbolgraph/$$m@*.symbols.json .build/docs/symbols/$$m/ 2>/dev/null || true; \
	  $(DOCC) convert Sources/$$m/$$m.docc --additional-symbol-graph-dir .build/docs/symbols/$$m \
	    --fallback-display-name $$m --fallback-bundle-identifier org.keybridge.$$m --output-path .build/docs/$$m; \
	done

# keybridge in PREFIX/bin, libkeybridge-provider.so in PREFIX/lib/keybridge, the man page in
# PREFIX/share/man/man1. The binary keeps loading the Swift runtime of the toolchain it was
# built with (its RUNPATH), so the toolchain stays where it is.
PREFIX ?= /usr/local
CONFIGURATION ?= debug
install: build
	@if [ "$(CONFIGURATION)" != debug ]; then $(SWIFT) build -c $(CONFIGURATION); fi
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/keybridge $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 .build/$(CONFIGURATION)/keybridge $(DESTDIR)$(PREFIX)/bin/keybridge
	install -m 644 .build/$(CONFIGURATION)/libkeybridge-provider.so $(DESTDIR)$(PREFIX)/lib/keybridge/libkeybridge-provider.so
	install -m 644 docs/keybridge.1 $(DESTDIR)$(PREFIX)/share/man/man1/keybridge.1
	@echo "installed $(DESTDIR)$(PREFIX)/bin/keybridge; make sure $(PREFIX)/bin is on your PATH"

# Deep checks (README "Deep checks: sanitizers and fuzzing"): the suite under ThreadSanitizer
# and AddressSanitizer, 10,000 handshakes and signatures under LeakSanitizer, and each libFuzzer
# target for FUZZ_SECONDS (default 600). Builds in its own .build/ scratch folders.
check-deep: deps
	scripts/check-deep
