// A Vite app as `npm create vite` makes it (vanilla), trimmed: the tests look for this text
// in the built bundle, served from public/ by the edge.
import "./style.css";

document.querySelector("#app").textContent = "hello from the viteapp bundle";
