import { cacheRoot, ensureGuestImage, loadRecipe, recipeHash } from "./image.js";

// Builds (or finds) the guest image outside a test, e.g. before `npm test` in CI or to
// look at a build log: `npx tsx test/guest/harness/build.ts`. Prints the image folder.
const hash = recipeHash(loadRecipe());
console.error(`recipe ${hash}, cache ${cacheRoot()}`);
const img = await ensureGuestImage({ log: (m) => console.error(m) });
console.error(
  `${img.built ? "built" : "cached"} in ${img.seconds.toFixed(img.built ? 0 : 3)} s, kernel ${img.kernelRelease}`,
);
console.log(img.dir);
