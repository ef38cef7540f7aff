// Applies the remembered light/dark choice before the first paint (a classic script in
// <head>, so the page does not flash the wrong theme). No choice → follow the system.
(function () {
  try {
    var saved = localStorage.getItem('gb.theme');
    if (saved === 'light' || saved === 'dark') document.documentElement.dataset.theme = saved;
  } catch (e) { /* storage disabled: follow the system */ }
})();
