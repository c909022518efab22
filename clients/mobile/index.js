/**
 * @format
 */
import './src/polyfills';
import { AppRegistry } from 'react-native';
import App from './src/ui/App';
import { name as appName } from './app.json';

AppRegistry.registerComponent(appName, () => App);
