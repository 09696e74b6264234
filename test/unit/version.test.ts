import t from "tap";
import { VERSION } from "../../src/version.js";

t.match(VERSION, /^\d+\.\d+\.\d+/, "version is semver from package.json");
