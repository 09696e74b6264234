#!/usr/bin/env node
// Runs the compiled daemon (npm run build, or `npm start` which builds first).
import { main } from "../dist/daemon/main.js";

await main(process.argv.slice(2), process.env);
