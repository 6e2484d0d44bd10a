/** Express 4 is installed under the alias `express4` beside Express 5; the tests only need its factory's shape. */
declare module "express4" {
  const express: (...args: never[]) => unknown;
  export default express;
}
