#!/usr/bin/env node
// The admin command, compiled from src/cli.
import { main } from "../dist/cli/main.js";

process.exitCode = await main(process.argv.slice(2), process.env);
