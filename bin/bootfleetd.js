#!/usr/bin/env node
// Runs the built daemon (npm run build, or `npm start` which builds first): one bundled
// file, dist/bootfleetd.mjs (scripts/build-daemon.mjs), for a faster start and less memory
// than loading dist/daemon/main.js module by module.
import { main } from "../dist/bootfleetd.mjs";

await main(process.argv.slice(2), process.env);
